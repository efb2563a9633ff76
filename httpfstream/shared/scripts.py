"""
The Lua scripts of shared mode, each one atomic step in Redis, and how a
feed entry's ID and fields are read.

Keys, per resource (``P`` is its path; the braces are a hash tag, which
keeps one resource's keys together)::

    httpfstream:{P}:lease  "TOKEN SERVER", PX lease: who appends now
    httpfstream:{P}:fence  INCR counter: TOKEN, one per claim
    httpfstream:{P}:feed   a Redis Stream: one entry per persisted batch
                           (its ID the batch's end offset), one when a
                           session begins and one when it ends

and two for the whole deployment: ``httpfstream:boot`` (absent after Redis
lost its data) and ``httpfstream:quarantine`` (no claim while it lives).

A feed entry's fields: ``k`` its kind (``b`` begin, ``g`` grown, ``e``
end), ``s`` the size (``-1``: not known; read the file), ``t`` the
session's token, ``o`` the server that wrote it, and for an end ``c`` the
close code and ``r`` the reason.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ADD",
    "CHECK",
    "CLAIM",
    "END",
    "GROWN",
    "RENEW",
    "WATCH",
    "entry_id",
    "fields",
]

# Adds an entry whose ID is the size (the end offset of the batch), or just
# after the newest entry when that is not greater (a begin or end entry at
# the same size, or a resource deleted and appended to again).
ADD = """
local function add(key, size, maxlen, ...)
  local ms, seq = math.max(size, 0), 0
  local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)[1]
  if last then
    local lms, lseq = string.match(last[1], '^(%d+)-(%d+)$')
    lms = tonumber(lms)
    if ms <= lms then ms = lms; seq = tonumber(lseq) + 1 end
  elseif ms == 0 then
    seq = 1
  end
  redis.call('XADD', key, 'MAXLEN', maxlen, string.format('%d-%d', ms, seq),
             's', string.format('%d', size), ...)
end
"""

# KEYS lease fence feed boot quarantine; ARGV server lease_ms feed_ttl_ms
# fence_ttl_ms maxlen.  {1, token} | {0, pttl of the holder's lease} |
# {-1, pttl of the quarantine}.
CLAIM = (
    ADD
    + """
if redis.call('EXISTS', KEYS[4]) == 0 then
  redis.call('SET', KEYS[4], ARGV[1])
  redis.call('SET', KEYS[5], '1', 'PX', ARGV[2])
end
local q = redis.call('PTTL', KEYS[5])
if q > 0 then return {-1, q} end
local held = redis.call('PTTL', KEYS[1])
if held ~= -2 then return {0, held} end
local token = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('SET', KEYS[1], token .. ' ' .. ARGV[1], 'PX', ARGV[2])
add(KEYS[3], -1, ARGV[5], 'k', 'b', 't', token, 'o', ARGV[1])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
return {1, token}
"""
)

# KEYS lease feed boot quarantine; ARGV value lease_ms feed_ttl_ms.  1 | 0.
RENEW = """
if redis.call('EXISTS', KEYS[3]) == 0 then
  redis.call('SET', KEYS[3], 'renew')
  redis.call('SET', KEYS[4], '1', 'PX', ARGV[2])
  return 0
end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
"""

# KEYS lease feed; ARGV value token server size feed_ttl_ms maxlen.  1 | 0.
GROWN = (
    ADD
    + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
add(KEYS[2], tonumber(ARGV[4]), ARGV[6], 'k', 'g', 't', ARGV[2], 'o', ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return 1
"""
)

# Releases the lease and adds the end entry in one step, so no reader sees
# the lease gone before the end; a live resource (the stateless mode,
# `stateless.scripts`) is marked complete or not in the same step.  KEYS
# lease feed fence live; ARGV value token server size code reason
# retention_ms maxlen.  1 | 0.
END = (
    ADD
    + """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('DEL', KEYS[1])
elseif cur or redis.call('GET', KEYS[3]) ~= ARGV[2] then
  return 0
end
if redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('HSET', KEYS[4], 'complete', ARGV[5] == '1000' and 1 or 0)
end
add(KEYS[2], tonumber(ARGV[4]), ARGV[8], 'k', 'e', 't', ARGV[2], 'o', ARGV[3],
    'c', ARGV[5], 'r', ARGV[6])
redis.call('PEXPIRE', KEYS[2], ARGV[7])
return 1
"""
)

# KEYS lease feed.  {lease value or '', newest entry ID or '0-0', its
# fields}.
WATCH = """
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)[1]
return {redis.call('GET', KEYS[1]) or '', last and last[1] or '0-0',
        last and last[2] or {}}
"""

# KEYS lease feed; ARGV last.  {lease value or '', entries after last}.
CHECK = """
return {redis.call('GET', KEYS[1]) or '',
        redis.call('XRANGE', KEYS[2], '(' .. ARGV[1], '+', 'COUNT', 512)}
"""


def entry_id(text: str) -> tuple[int, int]:
    """A feed entry's ID (``MS-SEQ``), comparable."""
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def fields(pairs: list[Any]) -> dict[Any, Any]:
    """An entry's fields, from Redis's flat list of names and values."""
    return dict(zip(pairs[::2], pairs[1::2], strict=False))
