"""
Shared mode (``--redis``): the core's two seams, the appender slots and the
growth feed, kept in Redis so that several servers can serve one root.
"""
