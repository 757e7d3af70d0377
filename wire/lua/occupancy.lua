-- Report one node's channel occupancy for one app to the deployment's
-- channel directory, which `channels.lua` reads.
--
-- ARGV[1]  the app's key prefix, "<prefix>:app/<app>/"
-- ARGV[2]  the node's tag
-- ARGV[3]  how long the report holds without a refresh, in milliseconds
-- ARGV[4]  "replace" (then channel, count pairs follow: the node's whole
--          occupancy for the app) or "refresh" (the last report still holds)
--
-- Keys: "<app>occupancy/<node>" is a hash channel -> session count on that
-- node; "<app>nodes" a sorted set of the nodes with a report, scored by the
-- time (Redis's clock, ms) their report expires. A node that stops
-- refreshing (it died) drops out of both within the time to live.
-- On a Redis Cluster the caller declares both keys as KEYS; on one Redis no
-- key is declared.
local base, node, ttl_ms = ARGV[1], ARGV[2], tonumber(ARGV[3])
local counts = base .. 'occupancy/' .. node
local nodes = base .. 'nodes'

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

if ARGV[4] == 'replace' then
    redis.call('DEL', counts)
    for i = 5, #ARGV - 1, 2 do
        redis.call('HSET', counts, ARGV[i], ARGV[i + 1])
    end
end
if redis.call('EXISTS', counts) == 1 then
    redis.call('PEXPIRE', counts, ttl_ms)
    redis.call('ZADD', nodes, now + ttl_ms, node)
    redis.call('PEXPIRE', nodes, ttl_ms)
else
    redis.call('ZREM', nodes, node)
end
redis.call('ZREMRANGEBYSCORE', nodes, '-inf', now)
return 1
