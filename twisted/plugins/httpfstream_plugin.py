"""
twistd plugin for httpfstream.

This file is only data: plugin discovery imports every plugin file, so it
must not import the httpfstream package itself.  ``httpfstream.tap`` is
imported when the command is actually used.
"""

from twisted.application.service import ServiceMaker

httpfstream = ServiceMaker(
    "httpfstream",
    "httpfstream.tap",
    "Append to files over WebSocket and follow them live over HTTP/WebSocket.",
    "httpfstream",
)
