-- Usage credits (credits.go): one hash per rule, subject and window,
-- fields r (requests charged) and t (tokens the answers used).
--
-- ARGV[1] "spend": then per key 3 values: request credit, token credit
--         (0 = unlimited), expiry of the window's hash (Unix ms). Charges
--         one request to every key unless one is used up.
--         Returns {status, kind, 0, then per key: r, t} with status 0 when
--         charged, -i when key i (1-based) refused for kind (1 requests,
--         2 tokens); nothing is written then.
-- ARGV[1] "settle": ARGV[2] requests to add (-1: a refund), ARGV[3]
--         tokens to add, to every key that still exists. Returns {}.
-- ARGV[1] "merge": then per key 3 values: the requests and tokens one
--         replica counted alone while Redis was unavailable, and the
--         expiry of the window's hash (Unix ms); added to the key's
--         counts. Returns {}.
if ARGV[1] == 'merge' then
  for i = 1, #KEYS do
    local a = 2 + (i - 1) * 3
    if tonumber(ARGV[a]) ~= 0 then redis.call('HINCRBY', KEYS[i], 'r', ARGV[a]) end
    if tonumber(ARGV[a + 1]) ~= 0 then redis.call('HINCRBY', KEYS[i], 't', ARGV[a + 1]) end
    if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('PEXPIREAT', KEYS[i], ARGV[a + 2]) end
  end
  return {}
end
if ARGV[1] == 'settle' then
  for i = 1, #KEYS do
    if redis.call('EXISTS', KEYS[i]) == 1 then
      if tonumber(ARGV[2]) ~= 0 then redis.call('HINCRBY', KEYS[i], 'r', ARGV[2]) end
      if tonumber(ARGV[3]) ~= 0 then redis.call('HINCRBY', KEYS[i], 't', ARGV[3]) end
    end
  end
  return {}
end
local used = {}
local status, kind = 0, 0
for i = 1, #KEYS do
  local h = redis.call('HMGET', KEYS[i], 'r', 't')
  local r, t = tonumber(h[1]) or 0, tonumber(h[2]) or 0
  used[i] = {r, t}
  local a = 2 + (i - 1) * 3
  local rl, tl = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  if status == 0 then
    if rl > 0 and r >= rl then status, kind = -i, 1
    elseif tl > 0 and t >= tl then status, kind = -i, 2 end
  end
end
local out = {status, kind, 0}
for i = 1, #KEYS do
  if status == 0 then
    used[i][1] = redis.call('HINCRBY', KEYS[i], 'r', 1)
    redis.call('PEXPIREAT', KEYS[i], ARGV[2 + (i - 1) * 3 + 2])
  end
  out[#out + 1] = used[i][1]
  out[#out + 1] = used[i][2]
end
return out
