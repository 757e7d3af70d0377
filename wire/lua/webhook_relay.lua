-- Move the deployment's queued webhook decisions (see membership.lua) to
-- one node's senders, one node at a time, in the order they were decided.
--
-- ARGV[1]  the deployment's key prefix, "<prefix>:"
-- ARGV[2]  the calling node's tag
-- ARGV[3]  how long the relay lease holds without a renewal, ms
-- ARGV[4]  events to take per app at most
-- ARGV[5]  the queue bound to keep in "<app>/webhooks-on" for ARGV[6..]
-- ARGV[6..] the apps this node has webhooks for
--
-- Every call marks the apps as having webhooks (for three lease periods).
-- The node holding (or taking) "<prefix>:webhook-relay" gets, per app in
-- ARGV order, {app, dropped since the last call, event, event, ...}; any
-- other node gets {}.
--
-- On a Redis Cluster the prefix is "{<prefix>}:", so every key below lives
-- in the deployment's slot, and the caller declares "<prefix>nodes" as
-- KEYS[1]; on one Redis no key is declared.
local prefix, node, lease_ms = ARGV[1], ARGV[2], tonumber(ARGV[3])
local take, bound = tonumber(ARGV[4]), ARGV[5]
local lease = prefix .. 'webhook-relay'

for i = 6, #ARGV do
    redis.call('SET', prefix .. 'app/' .. ARGV[i] .. '/webhooks-on', bound, 'PX', lease_ms * 3)
end

local holder = redis.call('GET', lease)
if holder == node then
    redis.call('PEXPIRE', lease, lease_ms)
elseif not redis.call('SET', lease, node, 'NX', 'PX', lease_ms) then
    return {}
end

local reply = {}
for i = 6, #ARGV do
    local base = prefix .. 'app/' .. ARGV[i] .. '/'
    local events = redis.call('LRANGE', base .. 'webhooks', 0, take - 1)
    redis.call('LTRIM', base .. 'webhooks', #events, -1)
    local dropped = redis.call('GETDEL', base .. 'webhooks-dropped') or '0'
    reply[#reply + 1] = ARGV[i]
    reply[#reply + 1] = dropped
    reply[#reply + 1] = tostring(#events)
    for _, event in ipairs(events) do
        reply[#reply + 1] = event
    end
end
return reply
