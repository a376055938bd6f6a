-- Change the routes kept in Redis on top of the config file, and tell every replica.
-- KEYS[1]  hash of route overrides: route key -> {"version":N,"spec":<RouteSpec JSON, or null = deleted>}
-- KEYS[2]  the config version (a counter; every change adds one)
-- ARGV[1]  channel on which the new version is published
-- ARGV[2]  "set": ARGV[3..] are pairs (route key, RouteSpec JSON | "null" | "" = back to the file's)
--          "reset": drop every override (the config file alone again)
-- Returns the new version.
local version = redis.call('INCR', KEYS[2])
if ARGV[2] == 'reset' then
  redis.call('DEL', KEYS[1])
else
  for i = 3, #ARGV, 2 do
    local spec = ARGV[i + 1]
    if spec == '' then
      redis.call('HDEL', KEYS[1], ARGV[i])
    else
      -- Built by concatenation, not cjson, which would turn [] into {}.
      redis.call('HSET', KEYS[1], ARGV[i], '{"version":' .. version .. ',"spec":' .. spec .. '}')
    end
  end
end
redis.call('PUBLISH', ARGV[1], version)
return version
