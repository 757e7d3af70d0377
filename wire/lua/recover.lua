-- Read what an app's streams hold after an id, and whether that is all that
-- was published to them after it.
--
-- ARGV[1]  the app's key prefix, "<prefix>:app/<app>/"
-- ARGV[2]  the client's last id
-- ARGV[3]  history time to live in milliseconds
-- ARGV[4..] streams, "<kind>/<name>"
-- Returns { "1" or "0" (complete or not), the app's position (its last id,
-- or the floor before any), frames... }, frames in id order per stream
-- (the host merges streams). With no streams it only reads the position.
-- On a Redis Cluster the caller declares the keys below as KEYS (as for
-- publish.lua); on one Redis no key is declared.
local base = ARGV[1]
local since = tonumber(ARGV[2])
local ttl_ms = tonumber(ARGV[3])

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local oldest_kept = now - ttl_ms * 1000

-- Without a floor nothing was published since this dataset began: ids
-- before now are unknown here.
local floor = redis.call('GET', base .. 'history-floor')
if not floor then
    floor = string.format('%.0f', now)
    redis.call('SET', base .. 'history-floor', floor)
end
local complete = since >= tonumber(floor)
local last = redis.call('GET', base .. 'last-id') or floor

local out = { '1', last }
local from = string.format('%.0f', math.max(since + 1, oldest_kept))
for i = 4, #ARGV do
    local stream = base .. 'history/' .. ARGV[i]
    if redis.call('EXISTS', stream) == 1 then
        local dropped = tonumber(redis.call('GET', base .. 'dropped/' .. ARGV[i]) or '0')
        if since < dropped then
            complete = false
        end
        if since + 1 < oldest_kept then
            -- Entries past their age are not replayed.
            local aged = redis.call('XRANGE', stream, string.format('%.0f', since + 1),
                '(' .. string.format('%.0f', oldest_kept), 'COUNT', 1)
            if #aged > 0 then
                complete = false
            end
        end
        for _, entry in ipairs(redis.call('XRANGE', stream, from, '+')) do
            out[#out + 1] = entry[2][2]
        end
    elseif since < oldest_kept then
        -- A stream idle for its whole time to live is gone with whatever
        -- it held.
        complete = false
    end
end
if not complete then
    out[1] = '0'
end
return out
