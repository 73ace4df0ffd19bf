"""The Lua scripts the Redis engine runs. ``SEED`` and ``DELETE_AND_GET`` only save round trips
(plain commands replace them where scripts are refused); ``RELEASE`` and ``DELETE_AND_FILL``
compare and write in one atomic step (without scripts a lock expires instead of being released,
and a save is not written through: see :mod:`freshcache.writethrough`)."""

from __future__ import annotations

__all__ = ["DELETE_AND_FILL", "DELETE_AND_GET", "RELEASE", "SEED"]

# One key and its signal (same hash tag, same slot): delete the lock only if still ours, then
# leave one element for waiters to pass around.
RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then redis.call('del', KEYS[1]) end
redis.call('rpush', KEYS[2], '1')
redis.call('pexpire', KEYS[2], ARGV[2])
return 1
"""

# MGET, then create each missing stamp (KEYS[ARGV[1]] onwards) with its token, so that a miss
# finds its stamps in place without a second round trip; on a miss (no KEYS[1]) also extend the
# keys the value will depend on to the TTL, so that its store need not. Tokens come from the
# client (os.urandom). The reply starts with KEYS[1]: the caller checks it is its own.
SEED = """
local values = redis.call('mget', unpack(KEYS))
local first = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local miss = not values[1]
for i = 2, #KEYS do
  if values[i] then
    if miss then
      local left = redis.call('ttl', KEYS[i])
      if left >= 0 and left < ttl then redis.call('expire', KEYS[i], ttl) end
    end
  elseif i >= first then
    values[i] = ARGV[i - first + 3]
    redis.call('set', KEYS[i], values[i], 'EX', ttl)
  end
end
table.insert(values, 1, KEYS[1])
return values
"""
# Delete the first ARGV[1] keys, then read the others: an invalidation and its registry check.
# The reply starts with KEYS[1], as the lookup's does.
DELETE_AND_GET = """
local n = tonumber(ARGV[1])
if n > 0 then redis.call('del', unpack(KEYS, 1, n)) end
local values = {}
if #KEYS > n then values = redis.call('mget', unpack(KEYS, n + 1, #KEYS)) end
table.insert(values, 1, KEYS[1])
return values
"""
# The same, after checking each fill (the last 4 keys per fill: global epoch, registry, stamp,
# value; 7 arguments each after ARGV[1..2]: the three tokens expected (the registry's epoch is
# its text up to the first ';'), the stamp's new token, the payload, the value's and the stamp's
# TTLs); a fill whose check held then sets the stamp and the value, and keeps the epoch and
# the registry alive as long as the stamp. See freshcache.writethrough.
DELETE_AND_FILL = """
local n = tonumber(ARGV[1])
local f = tonumber(ARGV[2])
local last = #KEYS - 4 * f
local ok = {}
for i = 1, f do
  local k = last + 4 * (i - 1)
  local a = 2 + 7 * (i - 1)
  local g = redis.call('get', KEYS[k + 1])
  local r = redis.call('get', KEYS[k + 2])
  local s = redis.call('get', KEYS[k + 3])
  ok[i] = g == ARGV[a + 1] and s == ARGV[a + 3] and r and string.match(r, '^[^;]*') == ARGV[a + 2]
end
if n > 0 then redis.call('del', unpack(KEYS, 1, n)) end
local values = {}
if last > n then values = redis.call('mget', unpack(KEYS, n + 1, last)) end
for i = 1, f do
  if ok[i] then
    local k = last + 4 * (i - 1)
    local a = 2 + 7 * (i - 1)
    local stamp_ttl = tonumber(ARGV[a + 7])
    redis.call('set', KEYS[k + 3], ARGV[a + 4], 'EX', stamp_ttl)
    redis.call('set', KEYS[k + 4], ARGV[a + 5], 'EX', tonumber(ARGV[a + 6]))
    for j = 1, 2 do
      local left = redis.call('ttl', KEYS[k + j])
      if left >= 0 and left < stamp_ttl then redis.call('expire', KEYS[k + j], stamp_ttl) end
    end
  end
end
table.insert(values, 1, KEYS[1])
return values
"""
