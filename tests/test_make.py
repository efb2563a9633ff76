"""
The Makefile's installs (issue 18): each target installs what it needs
into ``.venv`` from nothing, and only that (``make run`` the package alone,
``make test``, ``fuzz`` and the benchmarks the test extras, ``make lint``
the lint extras), once (a stamp per set), in compat editable mode, with
setuptools' "compat editable mode is transitional" box filtered out and
every other warning kept.

What ``make -n`` would run in a copy of the tree with no ``.venv`` (the
installs themselves take minutes and the package index), and the
Makefile's warning filter against the warning setuptools really emits.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from support.processes import BIN, require

REPO = Path(__file__).resolve().parent.parent
MAKEFILE = (REPO / "Makefile").read_text()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """What the Makefile's targets depend on, with no .venv."""
    require("make", shutil.which("make"), "apt-get install make")
    for name in ("Makefile", "pyproject.toml", "bench/fastgen.c"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        shutil.copy(REPO / name, tmp_path / name)
    return tmp_path


def dry_run(tree: Path, target: str) -> list[str]:
    """The commands ``make -n TARGET`` would run, one a line."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")
    }
    result = subprocess.run(
        ["make", "-n", "--no-print-directory", target],
        cwd=tree,
        capture_output=True,
        env=env,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr.decode()
    # Joined continuation lines: one command a line.
    return result.stdout.decode().replace("\\\n", " ").splitlines()


def installs(commands: list[str]) -> list[str]:
    """What each ``pip install -e`` installs: ``.``, ``.[test]``..."""
    found = []
    for command in commands:
        if "pip install" in command and " -e " in command:
            assert "--config-settings editable_mode=compat" in command, command
            (what,) = re.findall(r" -e '?([^' ]+)'?", command)
            found.append(what)
    return found


@pytest.mark.parametrize(
    ("target", "needs"),
    [
        ("run", "."),
        ("test", ".[test]"),
        ("fuzz", ".[test]"),
        ("bench-quick", ".[test]"),
        ("lint", ".[lint]"),
    ],
)
def test_each_target_installs_what_it_needs_from_nothing(tree, target, needs):
    commands = dry_run(tree, target)
    assert any(re.search(r"python3? -m venv \.venv$", c) for c in commands), commands
    assert installs(commands) == [needs]
    # Twistd's plugin cache, written while the install is fresh.
    assert any("getPlugins(IPlugin)" in c for c in commands), commands


def test_a_second_run_installs_nothing_until_pyproject_changes(tree):
    venv = tree / ".venv"
    venv.mkdir()
    for stamp in (".venv-ready", ".installed-run", ".installed-test"):
        (venv / stamp).touch()
    for target in ("run", "test"):
        assert installs(dry_run(tree, target)) == [], target
    assert installs(dry_run(tree, "lint")) == [".[lint]"]  # its own set
    # A newer pyproject.toml installs again.
    later = (venv / ".installed-run").stat().st_mtime + 10
    os.utime(tree / "pyproject.toml", (later, later))
    assert installs(dry_run(tree, "run")) == ["."]
    assert not any(" -m venv " in c for c in dry_run(tree, "run"))


def test_the_editable_warning_alone_is_filtered(tree):
    # The Makefile's filter, as PYTHONWARNINGS gives it, against what
    # setuptools emits for a compat editable install (pip shows it again,
    # as a BuildBackendWarning with the same text); any other warning
    # still shows.
    (what,) = re.findall(r"^EDITABLE_WARNING := (.+)$", MAKEFILE, re.M)
    assert any("PYTHONWARNINGS" in c for c in dry_run(tree, "run"))
    emit = (
        "import warnings\n"
        "from setuptools.command.editable_wheel import _EditableMode\n"
        "_EditableMode.convert('compat')\n"
        "warnings.warn('another warning', UserWarning)\n"
    )

    def stderr(env: dict[str, str]) -> str:
        return subprocess.run(
            [str(BIN / "python"), "-c", emit],
            capture_output=True,
            env={**os.environ, **env},
            timeout=30,
            check=True,
        ).stderr.decode()

    unfiltered = stderr({"PYTHONWARNINGS": "default"})
    assert "'compat' editable mode is transitional" in unfiltered
    filtered = stderr({"PYTHONWARNINGS": f"default,{what}"})
    assert "editable" not in filtered
    assert "another warning" in filtered
