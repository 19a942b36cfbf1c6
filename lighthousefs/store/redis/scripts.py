"""The Lua scripts: every change to a namespace's keys (keys.py) is one atomic script.

A script is refused by Redis Cluster unless all its keys share one slot: they do (the
namespace's hash tag). Nothing is written before every check passed (a failing script is
not rolled back).
"""
from __future__ import annotations

from .keys import DONE_TTL_S

FORMAT = "1"

# Creates the marker of a fresh namespace; returns {id, seq, format, server time (s, us)}.
# An events stream without a marker means part of the data is gone: id '' tells the caller.
INIT = """
local now = redis.call('TIME')
local meta = redis.call('HMGET', KEYS[1], 'id', 'seq', 'format')
if meta[1] then return {meta[1], meta[2] or '0', meta[3] or '', now[1], now[2]} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'', '', '', now[1], now[2]} end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'seq', '0', 'time', '0', 'format', ARGV[2])
return {ARGV[1], '0', ARGV[2], now[1], now[2]}
"""

# KEYS: meta, events, done:<token>, then one scope list per event.
# ARGV: marker id, deadline (ms of the server's clock; 0: none), then one body per event.
# Redis assigns the time (its clock, never below the last time stored), so appends never
# conflict. Times are decimal strings: Lua numbers are doubles, ns times exceed 2^53.
# Replies: {'ok', '<first> <time>'}; {'done', same} for a token that already ran;
# {'fenced'} / {'late', s, us}: refused, nothing written ('late' with Redis's TIME);
# {'lost', id, seq}.
# Nothing is written before every check passed (a failing script is not rolled back).
APPEND = """
local done = redis.call('GET', KEYS[3])
if done == 'fenced' then return {'fenced'} end
if done then return {'done', done} end
local meta = redis.call('HMGET', KEYS[1], 'id', 'seq', 'time')
if meta[1] ~= ARGV[1] then return {'lost', meta[1] or '', meta[2] or '0'} end
local now = redis.call('TIME')
local deadline = tonumber(ARGV[2])
if deadline > 0 and tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) > deadline then
  return {'late', now[1], now[2]}
end
local last, t = meta[3] or '0', now[1] .. string.format('%06d', tonumber(now[2])) .. '000'
if #t < #last or (#t == #last and t < last) then t = last end
local n = #ARGV - 2
local first = redis.call('HINCRBY', KEYS[1], 'seq', n) - n + 1
for i = 1, n do
  local seq = string.format('%d', first + i - 1)
  redis.call('XADD', KEYS[2], seq .. '-0', 'b', ARGV[2 + i], 't', t)
  redis.call('RPUSH', KEYS[3 + i], seq)
end
redis.call('HSET', KEYS[1], 'time', t)
local result = string.format('%d', first) .. ' ' .. t
redis.call('SET', KEYS[3], result, 'EX', DONE_TTL_S)
return {'ok', result}
""".replace("DONE_TTL_S", str(DONE_TTL_S))

# KEYS: done:<token>. An append whose answer was lost: what it stored ("<first> <time>"),
# or nil after making sure it never runs (done:<token> = 'fenced').
FENCE = """
local done = redis.call('GET', KEYS[1])
if done then return done end
redis.call('SET', KEYS[1], 'fenced', 'EX', DONE_TTL_S)
return false
""".replace("DONE_TTL_S", str(DONE_TTL_S))

# KEYS: meta, events. ARGV: first stream id wanted, count (0: only the marker).
READ = """
local meta = redis.call('HMGET', KEYS[1], 'id', 'seq')
local entries = {}
if tonumber(ARGV[2]) > 0 then
  entries = redis.call('XRANGE', KEYS[2], ARGV[1], '+', 'COUNT', ARGV[2])
end
return {meta[1] or '', meta[2] or '0', entries}
"""

# KEYS: snaps, snap:<seq>. ARGV: seq, blob, kept, key prefix of blobs.
PUT_SNAPSHOT = """
redis.call('SET', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[1])
local old = redis.call('ZRANGE', KEYS[1], 0, -(tonumber(ARGV[3]) + 1))
for _, seq in ipairs(old) do
  redis.call('DEL', ARGV[4] .. seq)
  redis.call('ZREM', KEYS[1], seq)
end
return #old
"""


class Scripts:
    """The scripts, registered with one client (redis-py loads them again after a
    restart or failover forgot them)."""

    def __init__(self, client):
        self.init = client.register_script(INIT)
        self.append = client.register_script(APPEND)
        self.read = client.register_script(READ)
        self.put_snapshot = client.register_script(PUT_SNAPSHOT)
        self.fence = client.register_script(FENCE)
