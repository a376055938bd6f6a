-- The cache lookup: one call per request, pipelined with the rate limit (docs/design.md: the hit's budget).
-- KEYS, ARGV and the reply: app/cache/protocol.py.
-- A WAIT marks the lock (its value gets a trailing "!"): only then does the filler announce the
-- fill on the channel, so that a miss nobody waits for (the common case) sends no message.
-- Only the bucket's stats hash is in KEYS: the script's other keys are named here from its prefix
-- and the ids in ARGV (protocol.py), which share its hash tag, hence its Redis Cluster slot.
local P = string.sub(KEYS[1], 1, -6)  -- "<bucket>:" of "<bucket>:stats"
local stats_key = KEYS[1]
local id = ARGV[5]
local entry_key = P .. 'e2:' .. id
local lock_key = P .. 'lock:' .. id
local member = string.gsub(ARGV[4], '%z', '') .. '\0' .. id
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local mode = ARGV[1]
-- The LRU's score for a read or a write: the time in microseconds, raised past the last score given
-- (kept in the stats hash as "clock"), so that no two touches tie, within a microsecond or on a
-- clock that stepped back: eviction follows the order of the touches exactly.
local function lru_score(stats)
  local at = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local last = tonumber(redis.call('HGET', stats, 'clock'))
  if last and at <= last then at = last + 1 end
  at = string.format('%d', at)
  redis.call('HSET', stats, 'clock', at)
  return at
end
local e = redis.call('HMGET', entry_key, 't', 'h', 'b')
local meta = e[1]
local fresh, swr, stored = 0, 0, 0
if meta then
  local f, w, st = string.match(meta, '^(%d+) (%d+) %d+ (%d+)')
  fresh, swr, stored = tonumber(f), tonumber(w), tonumber(st)
end

-- A fill taken is listed under its URI (member -> the lock's token) until its store lands:
-- an unsafe request's peek then sees something to purge, and its purge frees the lock and has the
-- store refused (cache_purge.lua, cache_set.lua). A URI new to the index keeps it ARGV[9] ms.
local function lock()
  if not redis.call('SET', lock_key, ARGV[2], 'NX', 'PX', ARGV[3]) then return 0 end
  local uri_key = P .. 'uri:' .. ARGV[10]
  redis.call('HSET', uri_key, member, ARGV[2])
  redis.call('PEXPIRE', uri_key, ARGV[9], 'NX')
  return 1
end

if mode == '2' then
  if meta and (fresh - now) * 1000 > (fresh - stored) * tonumber(ARGV[8]) then return {5, 0, now, meta} end
  return {6, lock(), now, meta or false}
end

if meta and now < fresh then
  redis.call('ZADD', P .. 'lru', 'XX', lru_score(stats_key), member)
  redis.call('HINCRBY', stats_key, 'hits', '1')
  return {1, 0, now, meta, e[2], e[3]}
end

if meta and now < swr then
  -- stale-while-revalidate: answer now; whoever takes the lock refreshes in the background
  redis.call('ZADD', P .. 'lru', 'XX', lru_score(stats_key), member)
  redis.call('HINCRBY', stats_key, 'hits', '1')
  local got = 0
  if mode == '0' then got = lock() end
  return {4, got, now, meta, e[2], e[3]}
end

-- Whether the last answer for the key could not be kept: lookups then skip the lock for a while.
local pass_key = P .. 'pass:' .. id
local passed = false
if not meta then
  -- The variant the caller asked for does not exist: was it keyed with the resource's Vary?
  -- Asked with the pass key in one call (a new key's miss, the commonest, needs both).
  local base = ARGV[6]
  if base == '' then base = id end
  local found = redis.call('MGET', P .. 'vary:' .. base, pass_key)
  local vary = found[1] or ''
  if vary ~= ARGV[7] then return {3, 0, now, vary} end
  passed = found[2] ~= false
elseif mode == '0' then
  passed = redis.call('EXISTS', pass_key) == 1
end

local state = 0
if mode == '0' and not passed then
  state = lock()
  if state == 0 then
    local held = redis.call('GET', lock_key)
    if held and string.sub(held, -1) ~= '!' then redis.call('APPEND', lock_key, '!') end
    return {2, 0, now, meta or false, e[2] or false, e[3] or false}
  end
end
redis.call('HINCRBY', stats_key, 'misses', '1')
return {0, state, now, meta or false, e[2] or false, e[3] or false}
