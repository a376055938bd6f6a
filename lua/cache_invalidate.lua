-- Remove the bucket's entries whose request path matches: a path and everything below it, or a glob
-- (the caller asks every bucket).
-- KEYS, ARGV and the reply: app/cache/protocol.py.
-- Work is proportional to the entries under the path (prefix) or the glob's literal head, read
-- off the lexicographic path index: never a scan of the keyspace. Deleted entries are named from
-- ARGV[4] (same hash tag, same Cluster slot; see README "Caching").
local members = {}
local function collect(lo, hi)
  for _, m in ipairs(redis.call('ZRANGEBYLEX', KEYS[3], lo, hi)) do members[#members + 1] = m end
end

local function glob_pattern(g)
  local out, i, n = {'^'}, 1, #g
  while i <= n do
    local c = string.sub(g, i, i)
    if c == '*' then
      out[#out + 1] = '.*'
    elseif c == '?' then
      out[#out + 1] = '.'
    elseif c == '[' and string.find(g, ']', i + 2, true) then
      local j = string.find(g, ']', i + 2, true)
      local body = string.sub(g, i + 1, j - 1)
      if string.sub(body, 1, 1) == '!' then body = '^' .. string.sub(body, 2) end
      out[#out + 1] = '[' .. string.gsub(body, '%%', '%%%%') .. ']'
      i = j
    elseif string.match(c, '%w') then
      out[#out + 1] = c
    else
      out[#out + 1] = '%' .. c
    end
    i = i + 1
  end
  out[#out + 1] = '$'
  return table.concat(out)
end

local pattern = nil
local p = ARGV[2]
if ARGV[1] == 'prefix' then
  if p == '' then
    collect('-', '+')
  else
    collect('[' .. p .. '\0', '(' .. p .. '\1')   -- the path itself
    collect('[' .. p .. '/', '(' .. p .. '0')     -- everything below it ('0' follows '/')
  end
else
  pattern = glob_pattern(ARGV[3])
  if p == '' then collect('-', '+') else collect('[' .. p, '(' .. p .. '\255') end
end

local removed = 0
local uri_prefix = string.sub(KEYS[5], 1, -6) .. 'uri:'  -- "<bucket>:uri:" of "<bucket>:stats"
for _, m in ipairs(members) do
  local cut = string.find(m, '\0', 1, true)
  local path, id = string.sub(m, 1, cut - 1), string.sub(m, cut + 1)
  if pattern == nil or string.match(path, pattern) then
    redis.call('ZREM', KEYS[3], m)
    redis.call('ZREM', KEYS[1], m)
    redis.call('ZREM', KEYS[2], m)
    local size = redis.call('HGET', KEYS[4], m)
    if size then
      redis.call('HDEL', KEYS[4], m)
      redis.call('HINCRBY', KEYS[5], 'bytes', -tonumber(size))
    end
    -- Its URI's index forgets it too (cache_set.lua's unlist), unless a fill in progress is listed.
    local key = ARGV[4] .. id
    local uri = redis.call('HGET', key, 'u')
    if uri and redis.call('HGET', uri_prefix .. uri, m) == '1' then redis.call('HDEL', uri_prefix .. uri, m) end
    redis.call('DEL', key)
    removed = removed + 1
  end
end
return removed
