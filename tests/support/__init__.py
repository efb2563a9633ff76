"""
What the tests share, by kind: `servers` (in-process), `clients` (on the
wire), `followers` (either transport), `processes` (subprocess harnesses),
`proxies` (forwarders, and `Stage`), `fakes` (in-memory stand-ins).
"""
