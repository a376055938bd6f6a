-- Read the config version and the route overrides together, so that they always match.
-- KEYS, ARGV and the reply: app/control/config_protocol.py.
local reply = {tonumber(redis.call('GET', KEYS[2]) or '0')}
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields do
  reply[i + 1] = fields[i]
end
return reply
