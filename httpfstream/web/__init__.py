"""
The web layer: twisted.web and Autobahn on top of the core.  A request is
parsed, decided (`decide`), checked against the tokens (`auth`), and served
by calling the registry; the WebSocket protocols (`appender`, `followers`)
are handed their session at the upgrade (`handoff`).  Also the browser's
pages (`viewer`), the site's assembly (`site`) and the admin site.
"""
