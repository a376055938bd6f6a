-- Count one failed authentication from a client address; past the threshold within the window,
-- the address cools off (refused) for a period that doubles with each repeated offence.
-- KEYS[1]  the address's record (apigw:authfail:{<address>}), a hash:
--          n (failures in the window), since (window start, ms), strikes (offences remembered),
--          last (last offence, ms), until (end of the cooling period, ms)
-- ARGV     threshold, window_ms, cooldown_ms, max_cooldown_ms, memory_ms, channel, address
-- Reply    {cooling (1/0), retry_after_ms, failures in the window, strikes}
-- While cooling, failures are not counted (the period does not grow while it runs). Starting a
-- period publishes "<address> <cooldown_ms>" on the channel: every replica then refuses the
-- address at once, without asking.
local key = KEYS[1]
local threshold, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local cooldown, max_cooldown, memory = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local h = redis.call('HMGET', key, 'n', 'since', 'strikes', 'last', 'until')
local n, since = tonumber(h[1] or '0'), tonumber(h[2] or '0')
local strikes, last, cool_until = tonumber(h[3] or '0'), tonumber(h[4] or '0'), tonumber(h[5] or '0')
if cool_until > now then
  return {1, cool_until - now, n, strikes}
end
if strikes > 0 and now - last >= memory then strikes = 0 end
if now - since >= window then n, since = 0, now end
n = n + 1
local cooling, left = 0, 0
if n >= threshold then
  strikes = strikes + 1
  left = math.min(cooldown * 2 ^ math.min(strikes - 1, 40), max_cooldown)
  cool_until, last, n, since, cooling = now + left, now, 0, now, 1
  redis.call('PUBLISH', ARGV[6], ARGV[7] .. ' ' .. string.format('%d', left))
end
redis.call('HSET', key, 'n', n, 'since', since, 'strikes', strikes, 'last', last,
           'until', string.format('%d', cool_until))
-- Kept while the window, the cooling period or the memory of offences needs it.
local ttl = since + window - now
if strikes > 0 then ttl = math.max(ttl, last + memory - now) end
ttl = math.max(ttl, cool_until - now, 1)
redis.call('PEXPIRE', key, string.format('%d', ttl))
return {cooling, left, n, strikes}
