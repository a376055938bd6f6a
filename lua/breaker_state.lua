-- Read a breaker's state as the other breaker scripts report it (for a replica that re-reads).
-- KEYS, ARGV and the reply: app/breaker/protocol.py.
local key = KEYS[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local h = redis.call('HMGET', key, 'state', 'gen', 'failures', 'open_until')
local state = h[1] or 'closed'
local open_until = tonumber(h[4] or '0')
local left = 0
if state == 'open' and open_until > now then left = math.ceil((open_until - now) / 1000) end
return {1, state, tonumber(h[2] or '0'), tonumber(h[3] or '0'), left, 0}
