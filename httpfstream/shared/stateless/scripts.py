"""
The Lua scripts of the stateless mode (``--redis`` with ``--archive``):
a live resource's bytes in Redis, each step atomic.

Keys, per resource ``P`` (beside shared mode's lease, fence and feed; the
braces keep one resource's keys together)::

    httpfstream:{P}:live   a hash: size, start, base, gen, complete
    httpfstream:{P}:c:I    chunk I: the bytes [start + I*C, start + (I+1)*C)

and for the deployment ``httpfstream:live``, a sorted set of the paths
of every live resource, scored by the time of its last append (ms).

- ``size``: the bytes the resource holds, every one acknowledged only
  once it is here (or in the bucket).
- ``start``: where the live data begins; the bytes before it are the
  resource's object in the bucket (``PREFIX/NAME``), archived before this
  session resumed it.
- ``base``: where the chunks still in Redis begin; those from ``start``
  to ``base`` were moved to the bucket, as ``PREFIX/.httpfstream/live/
  NAME/I``.
- ``gen``: the resource's generation, made when it was first created and
  kept in its object's metadata: a copy on a server's disk with another
  generation is of a resource since deleted and created again.
- ``complete``: ``1`` once a session ended well (set with the session's
  end, `scripts.END`), ``0`` while one runs or after one was lost.
"""

from __future__ import annotations

from ..scripts import ADD

__all__ = ["ANNOUNCE", "APPEND", "FINISH", "MOVED", "READ", "STATE"]

# KEYS lease live feed livezset; ARGV value offset data chunk prefix token
# server maxlen feed_ttl_ms now_ms path cap gen.
#   {1, size}          appended; the feed has its entry (`..scripts.ADD`)
#   {-1, 0}            the lease is not ours (fenced)
#   {-2, size}         the resource holds ``size`` bytes, not ``offset``
#   {-3, base}         Redis holds ``cap`` bytes of it already (the bucket
#                      has not taken its chunks): not now
APPEND = (
    ADD
    + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1, 0} end
local offset, data, chunk = tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local live = redis.call('HMGET', KEYS[2], 'size', 'start', 'base')
local size, start, base = tonumber(live[1]), tonumber(live[2]), tonumber(live[3])
if not size then
  size, start, base = offset, offset, offset
  redis.call('HSET', KEYS[2], 'size', size, 'start', start, 'base', base,
             'gen', ARGV[13], 'complete', 0)
end
if size ~= offset then return {-2, size} end
if size + #data - base > tonumber(ARGV[12]) then return {-3, base} end
local at = 1
while at <= #data do
  local i = math.floor((size - start) / chunk)
  local room = start + (i + 1) * chunk - size
  local piece = string.sub(data, at, at + room - 1)
  redis.call('APPEND', ARGV[5] .. i, piece)
  size = size + #piece
  at = at + #piece
end
redis.call('HSET', KEYS[2], 'size', size, 'complete', 0)
redis.call('ZADD', KEYS[4], ARGV[10], ARGV[11])
add(KEYS[3], size, ARGV[8], 'k', 'g', 't', ARGV[6], 'o', ARGV[7])
redis.call('PEXPIRE', KEYS[3], ARGV[9])
return {1, size}
"""
)

# KEYS live; ARGV offset length chunk prefix.
#   {size, start, base, gen, complete, bytes}: up to ``length`` bytes at
#   ``offset`` when they are chunks still in Redis, else '' (the caller
#   reads the bucket); {} when the resource has no live data.
READ = """
local live = redis.call('HMGET', KEYS[1], 'size', 'start', 'base', 'gen', 'complete')
if not live[1] then return {} end
local size, start, base = tonumber(live[1]), tonumber(live[2]), tonumber(live[3])
local offset, length, chunk = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
if offset >= base and offset < size then
  local stop = math.min(size, offset + length)
  while offset < stop do
    local i = math.floor((offset - start) / chunk)
    local from = offset - (start + i * chunk)
    local upto = math.min(stop, start + (i + 1) * chunk) - (start + i * chunk)
    local piece = redis.call('GETRANGE', ARGV[4] .. i, from, upto - 1)
    if #piece == 0 then break end
    out[#out + 1] = piece
    offset = offset + #piece
  end
end
return {live[1], live[2], live[3], live[4] or '', live[5] or '0', table.concat(out)}
"""

# KEYS live; ARGV base chunk prefix.  The chunk at ``base`` is in the
# bucket now: dropped from Redis.  1 | 0 (``base`` had moved on).
MOVED = """
local live = redis.call('HMGET', KEYS[1], 'start', 'base', 'size')
if not live[1] or tonumber(live[2]) ~= tonumber(ARGV[1]) then return 0 end
local start, base, chunk = tonumber(live[1]), tonumber(live[2]), tonumber(ARGV[2])
if base + chunk > tonumber(live[3]) then return 0 end
redis.call('DEL', ARGV[3] .. math.floor((base - start) / chunk))
redis.call('HSET', KEYS[1], 'base', base + chunk)
return 1
"""

# KEYS lease live livezset; ARGV size chunk prefix path.  The resource's
# object holds its ``size`` bytes: its live data is dropped, unless a
# session holds it again or it grew (``size`` -1: whatever it holds, for
# a DELETE).  {start, base} of what was dropped
# (the chunks from start to base are the caller's to delete from the
# bucket) | {} (kept).
FINISH = """
if redis.call('EXISTS', KEYS[1]) == 1 then return {} end
local live = redis.call('HMGET', KEYS[2], 'size', 'start', 'base')
if not live[1] then
  redis.call('ZREM', KEYS[3], ARGV[4])
  return {}
end
if ARGV[1] ~= '-1' and tonumber(live[1]) ~= tonumber(ARGV[1]) then return {} end
local start, size, chunk = tonumber(live[2]), tonumber(live[1]), tonumber(ARGV[2])
local i = math.floor((tonumber(live[3]) - start) / chunk)
while start + i * chunk < size do
  redis.call('DEL', ARGV[3] .. i)
  i = i + 1
end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[4])
return {live[2], live[3]}
"""

# KEYS live lease.  {size, start, base, gen, complete, held} | {}.
STATE = """
local live = redis.call('HMGET', KEYS[1], 'size', 'start', 'base', 'gen', 'complete')
if not live[1] then return {} end
return {live[1], live[2], live[3], live[4] or '', live[5] or '0',
        redis.call('EXISTS', KEYS[2])}
"""

# KEYS feed; ARGV size maxlen server reason feed_ttl_ms.  The resource was
# rebuilt in the bucket (Redis had lost it): an end entry at its size, so
# the streams open elsewhere take it (`feed.FeedReader`).
ANNOUNCE = (
    ADD
    + """
add(KEYS[1], tonumber(ARGV[1]), ARGV[2], 'k', 'e', 't', '', 'o', ARGV[3],
    'c', '4000', 'r', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""
)
