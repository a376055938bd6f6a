-- Change the routes kept in Redis on top of the config file, and tell every replica.
-- KEYS, ARGV, the reply and the override document: app/control/config_protocol.py.
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
