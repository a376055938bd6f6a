-- Read the config version and the route overrides together, so that they always match.
-- KEYS[1]  hash of route overrides (see config_change.lua)
-- KEYS[2]  the config version
-- Returns {version, key1, value1, key2, value2, ...}; version 0 when nothing was ever changed.
local reply = {tonumber(redis.call('GET', KEYS[2]) or '0')}
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields do
  reply[i + 1] = fields[i]
end
return reply
