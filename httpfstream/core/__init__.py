"""
The core: resources as append-only files, and every reader a cursor into
one.  It knows nothing of HTTP or WebSocket: names, the file store, the
stream of one open resource (its tail, cursors and write queue), appender
sessions, their records, the seams for more than one process, and the
`registry.StreamRegistry`, the one facade the web layer calls.
"""
