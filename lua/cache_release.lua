-- The filler got an answer it cannot store: free the lock and wake the waiters (if a lookup
-- marked the lock: see cache_get.lua). The fill leaves its URI's index (cache_get.lua listed it):
-- its member is "1" again when an entry of it is still kept (expired, in its grace), else gone.
-- KEYS, ARGV and the reply: app/cache/protocol.py. Only the bucket's stats hash is in KEYS: the
-- other keys are named from its prefix and the ids in ARGV, as in cache_get.lua.
local P = string.sub(KEYS[1], 1, -6)  -- "<bucket>:" of "<bucket>:stats"
local id = ARGV[4]
local lock_key = P .. 'lock:' .. id
local uri_key = P .. 'uri:' .. ARGV[6]
local member = string.gsub(ARGV[5], '%z', '') .. '\0' .. id
if redis.call('HGET', uri_key, member) == ARGV[1] then
  if redis.call('EXISTS', P .. 'e2:' .. id) == 1 then
    redis.call('HSET', uri_key, member, '1')
  else
    redis.call('HDEL', uri_key, member)
  end
end
local held = redis.call('GET', lock_key)
if held ~= ARGV[1] and held ~= ARGV[1] .. '!' then return 0 end
redis.call('DEL', lock_key)
if tonumber(ARGV[2]) > 0 then redis.call('SET', P .. 'pass:' .. id, '1', 'PX', ARGV[2]) end
if held ~= ARGV[1] then redis.call('PUBLISH', ARGV[3], id) end
return 1
