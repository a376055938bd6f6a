-- Record one health-check result for a target and decide its health for the fleet.
-- KEYS, ARGV and the reply: app/breaker/health_protocol.py.
local key = KEYS[1]
local url = ARGV[1]
local ok = tonumber(ARGV[2])
local healthy_threshold = tonumber(ARGV[3])
local unhealthy_threshold = tonumber(ARGV[4])
local healthy = redis.call('HGET', key, url) ~= '0'
local oks = tonumber(redis.call('HGET', key, url .. '|ok') or '0')
local fails = tonumber(redis.call('HGET', key, url .. '|fail') or '0')
if ok == 1 then
  oks, fails = oks + 1, 0
else
  oks, fails = 0, fails + 1
end
local changed = 0
if healthy and fails >= unhealthy_threshold then
  healthy, changed = false, 1
elseif not healthy and oks >= healthy_threshold then
  healthy, changed = true, 1
end
local flag = 0
if healthy then flag = 1 end
redis.call('HSET', key, url, flag, url .. '|ok', oks, url .. '|fail', fails)
return {flag, changed}
