-- Whether any of some URIs has entries stored (its uri key exists): asked in an unsafe request's
-- admission round trip, so that its completion purges only what may be there.
-- KEYS, ARGV and the reply: app/cache/protocol.py.
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then return 1 end
end
return 0
