-- Presence members and deployment-wide channel occupancy. Each node says
-- what it holds (a user in a presence channel, a channel with a local
-- subscriber); the deployment counts, per member or channel, how many nodes
-- hold it, so "added"/"occupied" and "removed"/"vacated" are decided once
-- for the whole deployment. A node that stops beating is taken for dead and
-- what it held is released by the next beat of any node.
--
-- ARGV[1]  the operation: join, leave, occupy, vacate, beat, retire
-- ARGV[2]  the deployment's key prefix, "<prefix>:"
-- ARGV[3]  the calling node's tag
-- join     ARGV[4] app, ARGV[5] channel, ARGV[6] user id, ARGV[7] user info
--          (JSON text, "" for none), ARGV[8] most members, ARGV[9] "1" when
--          the node now holds the user there, "0" to only read the roster,
--          ARGV[10] the joining connection, which is not told of itself.
--          Returns {status, member count, user, info, user, info, ...},
--          status "added", "present" or "full" (then no roster).
-- leave    ARGV[4] app, ARGV[5] channel, ARGV[6] user id: 1 when the member
--          left the deployment, else 0.
-- occupy   ARGV[4] app, ARGV[5] channel: 1 when the deployment's first
--          node took the channel, else 0. vacate: 1 when its last left.
-- beat     ARGV[4] how long the node counts as alive, ms. Returns {1 when
--          the node was known (0: it was taken for dead, or is new, and must
--          say again what it holds), then kind, app, channel, user per
--          released entry of dead nodes}.
-- retire   releases everything the node holds (a clean shutdown), same
--          reply as beat without the flag.
--
-- Keys: "<prefix>:node/<tag>/held" a set of what a node holds (JSON
-- arrays ["m", app, channel, user] or ["o", app, channel]);
-- "<prefix>:nodes" a sorted set of nodes by the time (Redis' clock, ms)
-- they count as dead; "<prefix>:app/<app>/members/<channel>" a hash user ->
-- user info; "<app>/member-nodes/<channel>" a hash user -> nodes holding
-- the user there; "<app>/occupied-nodes" a hash channel -> nodes holding
-- it. Member changes are announced on "<prefix>:control".
--
-- Webhooks: while "<app>/webhooks-on" exists (a node with webhooks for
-- the app keeps it, holding the queue's bound), every decision is appended
-- to the list "<app>/webhooks" as the webhook's event JSON, so the
-- deployment has one order of them; a full list drops the new event and
-- counts it in "<app>/webhooks-dropped". One node at a time (the holder of
-- "<prefix>:webhook-relay") moves them to its senders.
--
-- On a Redis Cluster the prefix is "{<prefix>}:", so every key lives in the
-- deployment's slot, the caller declares "<prefix>nodes" as KEYS[1] (which
-- sends the script there), and the control channel is a shard channel; on
-- one Redis no key is declared.
local op, prefix, node = ARGV[1], ARGV[2], ARGV[3]
local control = prefix .. 'control'
local publish = #KEYS > 0 and 'SPUBLISH' or 'PUBLISH'
local nodes = prefix .. 'nodes'

local function held_key(tag)
    return prefix .. 'node/' .. tag .. '/held'
end

local function app_key(app)
    return prefix .. 'app/' .. app .. '/'
end

local function member_entry(app, channel, user)
    return cjson.encode({'m', app, channel, user})
end

local function channel_entry(app, channel)
    return cjson.encode({'o', app, channel})
end

-- Queue a decision for the app's webhooks, if any node sends them.
local function webhook(app, event)
    local base = app_key(app)
    local bound = tonumber(redis.call('GET', base .. 'webhooks-on'))
    if not bound then
        return
    end
    if redis.call('LLEN', base .. 'webhooks') >= bound then
        redis.call('INCR', base .. 'webhooks-dropped')
        return
    end
    redis.call('RPUSH', base .. 'webhooks', cjson.encode(event))
end

-- Undo one entry a node no longer holds; true when the deployment lost the
-- member (announced to every node) or the channel.
local function release(entry)
    local item = cjson.decode(entry)
    local kind, app, channel = item[1], item[2], item[3]
    local base = app_key(app)
    if kind == 'm' then
        local user = item[4]
        local holders = base .. 'member-nodes/' .. channel
        if redis.call('HINCRBY', holders, user, -1) > 0 then
            return false
        end
        redis.call('HDEL', holders, user)
        redis.call('HDEL', base .. 'members/' .. channel, user)
        redis.call(publish, control, cjson.encode({
            member_removed = {app = app, channel = channel, user_id = user}}))
        webhook(app, {name = 'member_removed', channel = channel, user_id = user})
        return true
    end
    local holders = base .. 'occupied-nodes'
    if redis.call('HINCRBY', holders, channel, -1) > 0 then
        return false
    end
    redis.call('HDEL', holders, channel)
    webhook(app, {name = 'channel_vacated', channel = channel})
    return true
end

-- Release up to `budget` entries of `tag`; appends what the deployment
-- lost to `reply` and returns how many entries were taken.
local function release_held(tag, budget, reply)
    local entries = redis.call('SPOP', held_key(tag), budget)
    for _, entry in ipairs(entries) do
        if release(entry) then
            local item = cjson.decode(entry)
            reply[#reply + 1] = item[1]
            reply[#reply + 1] = item[2]
            reply[#reply + 1] = item[3]
            reply[#reply + 1] = item[4] or ''
        end
    end
    return #entries
end

if op == 'join' then
    local app, channel, user, info = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
    local base = app_key(app)
    local members = base .. 'members/' .. channel
    local holders = base .. 'member-nodes/' .. channel
    local status = 'present'
    if ARGV[9] == '1' then
        local count = redis.call('HLEN', holders)
        if redis.call('HEXISTS', holders, user) == 0 and count >= tonumber(ARGV[8]) then
            return {'full', count}
        end
        if redis.call('SADD', held_key(node), member_entry(app, channel, user)) == 1
            and redis.call('HINCRBY', holders, user, 1) == 1 then
            redis.call('HSET', members, user, info)
            status = 'added'
            redis.call(publish, control, cjson.encode({member_added = {
                app = app, channel = channel, user_id = user, user_info = info,
                except = ARGV[10]}}))
            webhook(app, {name = 'member_added', channel = channel, user_id = user})
        end
    end
    local reply = {status, redis.call('HLEN', holders)}
    for _, field in ipairs(redis.call('HGETALL', members)) do
        reply[#reply + 1] = field
    end
    return reply
elseif op == 'leave' or op == 'vacate' then
    local entry
    if op == 'leave' then
        entry = member_entry(ARGV[4], ARGV[5], ARGV[6])
    else
        entry = channel_entry(ARGV[4], ARGV[5])
    end
    if redis.call('SREM', held_key(node), entry) == 0 then
        return 0
    end
    if release(entry) then
        return 1
    end
    return 0
elseif op == 'occupy' then
    local app, channel = ARGV[4], ARGV[5]
    if redis.call('SADD', held_key(node), channel_entry(app, channel)) == 0 then
        return 0
    end
    if redis.call('HINCRBY', app_key(app) .. 'occupied-nodes', channel, 1) == 1 then
        webhook(app, {name = 'channel_occupied', channel = channel})
        return 1
    end
    return 0
elseif op == 'beat' then
    local time = redis.call('TIME')
    local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
    local known = redis.call('ZADD', nodes, now + tonumber(ARGV[4]), node) == 0
    local reply = {known and 1 or 0}
    -- A bounded amount of work per beat: a big dead node is released over
    -- a few beats.
    local budget = 2000
    for _, dead in ipairs(redis.call('ZRANGEBYSCORE', nodes, '-inf', now, 'LIMIT', 0, 8)) do
        budget = budget - release_held(dead, budget, reply)
        if redis.call('SCARD', held_key(dead)) == 0 then
            redis.call('ZREM', nodes, dead)
        end
        if budget <= 0 then
            break
        end
    end
    return reply
elseif op == 'retire' then
    local reply = {}
    while release_held(node, 2000, reply) > 0 do
    end
    redis.call('ZREM', nodes, node)
    return reply
end
return redis.error_reply('unknown membership operation ' .. tostring(op))
