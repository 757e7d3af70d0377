-- INCRBY that gives a new counter its time to live and leaves the expiry of
-- an existing one alone (the in-memory store's semantics).
-- KEYS[1] the counter, ARGV[1] the delta, ARGV[2] the time to live in ms.
-- A value that is not a counter (madx_wire::store::parse_counter: digits,
-- no sign, no leading zero) is refused before anything is written; INCRBY
-- itself refuses what is too large. The new value is read back as text: a
-- number passed through Lua is a double, exact only up to 2^53, and
-- counters go to 2^63 - 1.
local current = redis.call('GET', KEYS[1])
if current and current ~= '0' and not string.find(current, '^[1-9]%d*$') then
    return redis.error_reply('ERR value is not an integer or out of range')
end
redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) == -1 then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return redis.call('GET', KEYS[1])
