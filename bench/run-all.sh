#!/usr/bin/env bash
# Every benchmark of docs/benchmarks.md in one go, on loopback: the product
# and the bare-transport floor in the same run, the file store against
# memory (and its restart), presence against plain channels, webhook
# throughput, a cut-off-and-recover overload run, two nodes on Redis, and
# 50,000 sockets over three nodes. One Redis against a Redis Cluster:
# bench/scale-out.sh.
# Human lines go to the terminal, JSON lines to $OUT (bench-results.jsonl).
# Needs redis-server for the cluster runs (scripts/test installs it).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-bench-results.jsonl}
# Rounds of each comparison (product against floor, file against memory),
# each on fresh servers; bench/summarize.py reports the median and spread
# of every ratio over them. Judge a target on REPEAT=5.
REPEAT=${REPEAT:-1}
cargo build --release -p madx-pusher -p madx-bench
BENCH=${CARGO_TARGET_DIR:-target}/release/madx-bench
PUSHER=${CARGO_TARGET_DIR:-target}/release/madx-pusher
FLOOR=${CARGO_TARGET_DIR:-target}/release/floor-server

# shellcheck source=bench/lib.sh
source bench/lib.sh

echo "== one node, in memory, and the floor ($REPEAT rounds)" >&2
for round in $(seq "$REPEAT"); do
    start_pusher "single-$round" <<<"$big"
    single_url=$url single_pid=$pid
    start_floor
    product=(--label product --round "$round" --target "$single_url" --host-pid "$single_pid")
    floor=(--label floor --round "$round" --target "$floor_url" --host-pid "$floor_pid" --floor)
    run "${product[@]}" idle --sockets 19000
    run "${floor[@]}" idle --sockets 19000
    # Connects: tokens issued first, then the upgrades timed; and a
    # client's whole way in (token, upgrade, subscribe) timed per socket.
    for journey in "" "--with-token-and-subscribe"; do
        # shellcheck disable=SC2086 # $journey is zero or one word
        run "${product[@]}" connect --sockets 10000 $journey
        # shellcheck disable=SC2086
        run "${floor[@]}" connect --sockets 10000 $journey
    done
    for shape in "1000 100 10" "10000 10 10"; do
        read -r subscribers rate seconds <<<"$shape"
        run "${product[@]}" fanout --subscribers "$subscribers" --rate "$rate" --seconds "$seconds"
        run "${floor[@]}" fanout --subscribers "$subscribers" --rate "$rate" --seconds "$seconds"
    done
    stop "$floor_pid"
    if [ "$round" -lt "$REPEAT" ]; then stop "$single_pid"; fi
done
run --target "$single_url" --host-pid "$single_pid" inboxes --sockets 1000 --rate 1000 --seconds 5
# The Pusher HTTP API's publish path (signed triggers) against /v1/publish,
# alternating: one subscriber (the cost of a publish) and a thousand.
for shape in "1 1000 10" "1000 100 10"; do
    read -r subscribers rate seconds <<<"$shape"
    for api in "" "--pusher-app demo"; do
        # shellcheck disable=SC2086 # $api is zero or two words
        run --target "$single_url" --host-pid "$single_pid" $api \
            fanout --subscribers "$subscribers" --rate "$rate" --seconds "$seconds"
    done
done
stop "$single_pid"

# The file store against memory: the same connects and publishes on a
# fresh node of each, alternating, REPEAT rounds; then a file store filled with
# 100,000 tokens and a full history (1,000 channels of 100 messages) is
# killed (SIGKILL) and started again, timed from the start to /readyz.
echo "== one node: memory against the file store" >&2
for round in $(seq "$REPEAT"); do
    for store in memory file; do
        flags=()
        if [ "$store" = file ]; then flags=(--store "file:$work/store-$round"); fi
        start_pusher "$store-$round" "${flags[@]}" <<<"$big"
        run --label "$store" --round "$round" --target "$url" --host-pid "$pid" connect --sockets 10000
        run --label "$store" --round "$round" --target "$url" --host-pid "$pid" \
            fanout --subscribers 1000 --rate 100 --seconds 10
        stop "$pid"
    done
done
start_pusher filled --store "file:$work/store-restart" <<<"$big"
run --label file --target "$url" --host-pid "$pid" fill --tokens 100000 --messages 100000
kill -9 "$pid"
wait "$pid" 2>/dev/null || true
started=$(date +%s.%N)
start_pusher restarted --store "file:$work/store-restart" <<<"$big"
python3 -c 'import json, sys; print(json.dumps({"scenario": "restart", "label": "file", "tokens": 100000, "messages": 100000, "secs_to_ready": float(sys.argv[2]) - float(sys.argv[1])}))' \
    "$started" "$(date +%s.%N)" | tee -a "$OUT"
stop "$pid"

# Presence on connect and subscribe: plain channels, then presence channels
# (one member per socket), against one fresh server per run, so the two
# phases are the comparison. Rooms of 100 (the default max_members: the
# fan-out of member_added included) and rooms of 1 (a member's own state).
echo "== presence: connect + subscribe, plain against presence channels" >&2
for room_size in 100 1; do
    start_pusher "presence-$room_size" <<<"$big"
    run --target "$url" --host-pid "$pid" presence --sockets 8000 --room-size "$room_size"
    stop "$pid"
done

# Webhook throughput: client publishes, each a signed client_event webhook
# to the receiver in the generator (its port is in the server's config, so
# the server starts first; the generator binds it). 10 publishes/s per
# socket, under the default client publish limits. The baseline app (no
# webhook) takes the same load first: the webhook's share of the CPU.
echo "== webhooks: client events to a receiver that checks signatures" >&2
for rate in 1000 5000 10000; do
    receiver_port=$(free_port)
    start_pusher "webhooks-$rate" <<EOF
$big
[[apps]]
id = "bench"
key = "bench-key"
secret = "bench-secret"
[[apps.webhooks]]
url = "http://127.0.0.1:$receiver_port/webhook"
events = ["client_event"]
[[apps]]
id = "bench-nohook"
key = "nohook-key"
secret = "nohook-secret"
EOF
    run --target "$url" --host-pid "$pid" --key bench-key --secret bench-secret \
        webhooks --receiver-port "$receiver_port" --sockets $((rate / 10)) --rate "$rate" --seconds 10 \
        --baseline-key nohook-key --baseline-secret nohook-secret
    stop "$pid"
done

echo "== overload: a small send queue, deep history" >&2
start_pusher overload <<'EOF'
[limits]
send_queue = 256
[history]
per_stream = 100000
total = 1000000
EOF
run --target "$url" --host-pid "$pid" overload --subscribers 100 --stalled 10
stop "$pid"

# Fresh nodes each round; summarize.py divides each round by that round's
# floor above.
echo "== two nodes on Redis ($REPEAT rounds)" >&2
start_redis
redis_url="redis://127.0.0.1:$redis_port/0"
for round in $(seq "$REPEAT"); do
    start_pusher "node1-$round" --store "$redis_url" <<<"$big"
    node1_url=$url node1_pid=$pid
    start_pusher "node2-$round" --store "$redis_url" <<<"$big"
    node2_url=$url node2_pid=$pid
    for shape in "1000 100 10" "10000 10 10"; do
        read -r subscribers rate seconds <<<"$shape"
        # CPU of both nodes and of Redis: the whole service.
        run --label two-nodes --round "$round" --target "$node1_url" --also "$node2_url" \
            --host-pid "$node1_pid" --host-pid "$node2_pid" --host-pid "$redis_pid" \
            fanout --subscribers "$subscribers" --rate "$rate" --seconds "$seconds"
    done
    if [ "$round" -lt "$REPEAT" ]; then
        stop "$node1_pid"
        stop "$node2_pid"
    fi
done

echo "== 50,000 sockets over three nodes (one generator per node)" >&2
start_pusher node3 --store "$redis_url" <<<"$big"
node3_url=$url node3_pid=$pid
hold_sockets redis 16667 "$node1_url $node1_pid" "$node2_url $node2_pid" "$node3_url $node3_pid"

echo "== ratios over the rounds (median, lowest, highest)" >&2
python3 bench/summarize.py "$OUT" >&2
echo "results: $OUT" >&2
