#!/usr/bin/env bash
# One Redis against a three-shard Redis Cluster under the same load
# (docs/benchmarks.md, "One Redis and a Redis Cluster"): two nodes each,
# 10,000 connects, 1,000 subscribers x 100 msg/s, then 1,000 msg/s each to
# one of 1,000 users' inboxes. The --host-pid given
# to madx-bench are the Redis processes, so its "host" CPU per connect and
# per delivery is Redis' CPU; how that CPU splits over the shards is written
# as a `redis_cpu_split` line. Then the most sockets several nodes on the
# cluster hold at once (by default three nodes of 16,667).
# JSON lines go to $OUT (bench-scale-out.jsonl); needs redis-server and
# redis-cli (scripts/test installs them).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-bench-scale-out.jsonl}
REPEAT=${REPEAT:-1}
# The last part: HOLD_NODES nodes on the cluster, HOLD_PER_NODE sockets
# each (each node and generator is one process: keep this under the file
# descriptor limit, `ulimit -n`).
HOLD_NODES=${HOLD_NODES:-3}
HOLD_PER_NODE=${HOLD_PER_NODE:-16667}
cargo build --release -p madx-pusher -p madx-bench
BENCH=${CARGO_TARGET_DIR:-target}/release/madx-bench
PUSHER=${CARGO_TARGET_DIR:-target}/release/madx-pusher

# shellcheck source=bench/lib.sh
source bench/lib.sh

# measured SCENARIO ARGS...: one bench run of the current $store and $round
# (its common flags in $bench), then a `redis_cpu_split` line: each Redis
# process's share of the Redis CPU the run took, and the CPU seconds of
# Redis and of the two nodes ($a_pid, $b_pid), token requests included.
measured() {
    local scenario=$1 before after nodes_before nodes_after
    shift
    before=$(cpu_ticks "${redis_pids[@]}" | paste -sd,)
    nodes_before=$(cpu_ticks "$a_pid" "$b_pid" | paste -sd,)
    run "${bench[@]}" "$scenario" "$@"
    after=$(cpu_ticks "${redis_pids[@]}" | paste -sd,)
    nodes_after=$(cpu_ticks "$a_pid" "$b_pid" | paste -sd,)
    python3 - "$store" "$round" "$scenario" "$before" "$after" "$nodes_before" "$nodes_after" \
        "$(getconf CLK_TCK)" <<'PY' | tee -a "$OUT" >&2
import json, sys
label, round_, scenario, before, after, nodes_before, nodes_after, tick = sys.argv[1:]
def used(before, after):
    return [b - a for a, b in zip(map(int, before.split(",")), map(int, after.split(",")))]
redis, nodes = used(before, after), used(nodes_before, nodes_after)
total = sum(redis) or 1
print(json.dumps({"scenario": "redis_cpu_split", "label": label, "round": int(round_),
                  "of": scenario, "shares": [round(u / total, 3) for u in redis],
                  "redis_cpu_secs": sum(redis) / int(tick), "node_cpu_secs": sum(nodes) / int(tick)}))
PY
}

for round in $(seq "$REPEAT"); do
    for store in redis cluster; do
        echo "== two nodes on $store (round $round)" >&2
        if [ "$store" = redis ]; then
            start_redis
            store_url="redis://127.0.0.1:$redis_port/0"
            redis_pids=("$redis_pid")
        else
            start_redis_cluster 3
            store_url=$cluster_url
            redis_pids=("${cluster_pids[@]}")
        fi
        start_pusher "$store-$round-a" --store "$store_url" <<<"$big"
        a_url=$url a_pid=$pid
        start_pusher "$store-$round-b" --store "$store_url" <<<"$big"
        b_url=$url b_pid=$pid
        bench=(--label "$store" --round "$round" --target "$a_url" --also "$b_url")
        for redis in "${redis_pids[@]}"; do bench+=(--host-pid "$redis"); done
        measured connect --sockets 10000
        measured fanout --subscribers 1000 --rate 100 --seconds 10
        # Every message to one user's inbox: Redis' cost per publish.
        measured inboxes --sockets 1000 --rate 1000 --seconds 10
        for process in "$a_pid" "$b_pid" "${redis_pids[@]}"; do stop "$process"; done
    done
done

echo "== $((HOLD_PER_NODE * HOLD_NODES)) sockets over $HOLD_NODES nodes on the cluster" >&2
start_redis_cluster 3
nodes=()
for n in $(seq "$HOLD_NODES"); do
    start_pusher "hold-$n" --store "$cluster_url" <<<"$big"
    nodes+=("$url $pid")
done
hold_sockets cluster "$HOLD_PER_NODE" "${nodes[@]}"

echo "== ratios, cluster against one Redis (median, lowest, highest)" >&2
python3 bench/summarize.py "$OUT" >&2
echo "results: $OUT" >&2
