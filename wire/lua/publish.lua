-- Publish messages of one app: assign ids, append to each target's history
-- stream and announce each on the target's live channel, atomically.
--
-- ARGV[1]  the app's key prefix, "<prefix>:app/<app>/"
-- ARGV[2]  messages kept per stream
-- ARGV[3]  history time to live in milliseconds
-- ARGV[4]  number of messages, then per message:
--          target count, frame tail, the connection id that must not get
--          it ("" for none), and per target "<kind>/<name>"
-- Returns the ids, as decimal strings, in order.
--
-- The live channels carry the frame as is, or "<connection id> <frame>"
-- when a connection is excluded (a frame always starts with "{").
--
-- Ids are max(last id + 1, now in microseconds): strictly increasing per
-- app, across nodes and across Redis restarts while the clock goes forward.
--
-- On a Redis Cluster the caller declares the keys below as KEYS (last-id,
-- history-floor, then history/ and dropped/ per stream: they route the
-- script to the app's slot and keep it off a half-migrated slot) and the
-- live channels are shard channels; on one Redis no key is declared.
local base = ARGV[1]
local publish = #KEYS > 0 and 'SPUBLISH' or 'PUBLISH'
local max_len = tonumber(ARGV[2])
local ttl_ms = tonumber(ARGV[3])

local function number_of(stream_id)
    return tonumber(string.match(stream_id, '^(%d+)'))
end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local oldest_kept = now - ttl_ms * 1000
-- History older than this id may have been lost with an earlier dataset.
redis.call('SET', base .. 'history-floor', string.format('%.0f', now), 'NX')
local last = tonumber(redis.call('GET', base .. 'last-id') or '0')

local ids = {}
local at = 5
for m = 1, tonumber(ARGV[4]) do
    local targets = tonumber(ARGV[at])
    local tail = ARGV[at + 1]
    local except = ARGV[at + 2]
    at = at + 3
    local id = math.max(last + 1, now)
    last = id
    local id_text = string.format('%.0f', id)
    local frame = '{"type":"message","id":"' .. id_text .. '",' .. tail
    local live = frame
    if except ~= '' then
        live = except .. ' ' .. frame
    end
    for _ = 1, targets do
        local stream_name = ARGV[at]
        at = at + 1
        local stream = base .. 'history/' .. stream_name
        local dropped_key = base .. 'dropped/' .. stream_name
        -- Remember the newest id leaving the stream (over the length cap or
        -- out of age): recovery from an older id cannot be complete.
        local dropped = 0
        local length = redis.call('XLEN', stream)
        if length >= max_len then
            local leaving = redis.call('XRANGE', stream, '-', '+', 'COUNT', length - max_len + 1)
            dropped = number_of(leaving[#leaving][1])
        end
        local aged = redis.call('XREVRANGE', stream, '(' .. string.format('%.0f', oldest_kept), '-', 'COUNT', 1)
        if #aged > 0 then
            dropped = math.max(dropped, number_of(aged[1][1]))
        end
        if dropped > 0 then
            local before = tonumber(redis.call('GET', dropped_key) or '0')
            redis.call('SET', dropped_key, string.format('%.0f', math.max(before, dropped)))
        end
        redis.call('XADD', stream, 'MAXLEN', max_len, id_text .. '-0', 'f', frame)
        redis.call('XTRIM', stream, 'MINID', string.format('%.0f', oldest_kept))
        redis.call('PEXPIRE', stream, ttl_ms)
        if redis.call('EXISTS', dropped_key) == 1 then
            redis.call('PEXPIRE', dropped_key, ttl_ms)
        end
        redis.call(publish, base .. 'live/' .. stream_name, live)
    end
    ids[m] = id_text
end
redis.call('SET', base .. 'last-id', string.format('%.0f', last))
return ids
