-- DECRBY that removes a counter reaching 0, leaves a missing counter missing
-- and keeps the expiry of an existing one (the in-memory store's semantics).
-- KEYS[1] the counter, ARGV[1] the delta.
-- A value that is not a counter is refused before anything is written, as
-- in increment.lua. What is left is read back as text (see increment.lua);
-- the test against 0 is exact as a double.
local current = redis.call('GET', KEYS[1])
if not current then
    return 0
end
if current ~= '0' and not string.find(current, '^[1-9]%d*$') then
    return redis.error_reply('ERR value is not an integer or out of range')
end
local value = redis.call('DECRBY', KEYS[1], ARGV[1])
if value <= 0 then
    redis.call('DEL', KEYS[1])
    return 0
end
return redis.call('GET', KEYS[1])
