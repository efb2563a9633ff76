"""
Log observers for twistd's ``--logger`` option.

::

    twistd -n --pidfile= --logger=httpfstream.logs.json_observer \\
        httpfstream --root /var/lib/httpfstream

logs every event, the one line per session (namespace
``httpfstream.session``) and the access log included, as one JSON object a
line on standard output, for journald, Docker or a log shipper.
"""

from __future__ import annotations

import sys

from twisted.logger import FileLogObserver, jsonFileLogObserver

__all__ = ["json_observer"]


def json_observer() -> FileLogObserver:
    """
    Twisted's JSON log observer on standard output, one event a line (JSON
    Lines: no record separator before each).

    A session's line has its fields as keys: ``kind`` (``append``,
    ``post``, ``follow-ws``, ``follow-http`` or ``snapshot``), ``name``,
    ``peer``, ``offset``, ``nbytes``, ``duration``, ``outcome`` (a close
    code, an HTTP status or a word) and ``detail``, beside Twisted's own
    ``log_namespace``, ``log_level``, ``log_time`` and ``log_format``, from
    which ``event["log_format"].format(**event)`` gives back the text line.

    twistd calls this before it sends standard output to the log, so the
    observer writes to the real one.
    """
    return jsonFileLogObserver(sys.stdout, recordSeparator="")
