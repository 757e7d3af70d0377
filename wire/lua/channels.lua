-- Read the deployment's channel directory for one app (written by
-- `occupancy.lua`): subscription counts summed over the nodes whose report
-- still holds. Read-only.
--
-- ARGV[1]  the app's key prefix, "<prefix>:app/<app>/"
-- ARGV[2]  a node to leave out ("" for none): the asking node adds its own
--          live counts instead of its last report
-- ARGV[3]  "channel": ARGV[4] is one channel's name; returns {count}
--          "prefix": ARGV[4] is a name prefix; returns {name, count, ...}
--          for every occupied channel whose name starts with it
-- On a Redis Cluster the caller declares "<app>nodes" as KEYS[1] (the
-- reports read after it live in the same slot); on one Redis no key is
-- declared.
local base, skip, mode, name = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local live = redis.call('ZRANGEBYSCORE', base .. 'nodes', '(' .. now, '+inf')

if mode == 'channel' then
    local total = 0
    for _, node in ipairs(live) do
        if node ~= skip then
            total = total + tonumber(redis.call('HGET', base .. 'occupancy/' .. node, name) or '0')
        end
    end
    return {total}
end

local totals, names = {}, {}
for _, node in ipairs(live) do
    if node ~= skip then
        local entries = redis.call('HGETALL', base .. 'occupancy/' .. node)
        for i = 1, #entries, 2 do
            local channel = entries[i]
            if string.sub(channel, 1, #name) == name then
                if totals[channel] == nil then
                    totals[channel] = 0
                    names[#names + 1] = channel
                end
                totals[channel] = totals[channel] + tonumber(entries[i + 1])
            end
        end
    end
end
local reply = {}
for _, channel in ipairs(names) do
    reply[#reply + 1] = channel
    reply[#reply + 1] = totals[channel]
end
return reply
