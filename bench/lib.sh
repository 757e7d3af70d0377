# What the benchmark scripts share (sourced, from the repository's root):
# a scratch directory and the processes to stop on exit, servers on free
# loopback ports (madx-pusher, the floor, Redis, a Redis Cluster), a
# bench run appending its JSON line to $OUT, and process CPU.
# Needs $BENCH, $PUSHER and $OUT; $FLOOR for start_floor.

work=$(mktemp -d)
pids=()
cleanup() {
    local status=$?
    kill "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
    # A failed run's servers may say why: show the end of each log before
    # the scratch directory goes.
    if ((status != 0)); then
        for log in "$work"/*.log; do
            [ -s "$log" ] || continue
            echo "== last lines of $(basename "$log")" >&2
            tail -n 20 "$log" >&2
        done
    fi
    rm -rf "$work"
}
trap cleanup EXIT
: >"$OUT"

# Every bench node's config: its metrics open to the scripts, room for the
# big socket counts.
big='operator_token = "bench-operator-token"
[limits]
max_sockets_per_app = 100000'

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for() { # URL
    python3 - "$1" <<'EOF'
import sys, time, urllib.request
for _ in range(300):
    try:
        urllib.request.urlopen(sys.argv[1], timeout=1)
        sys.exit(0)
    except Exception:
        time.sleep(0.1)
sys.exit(f"{sys.argv[1]} did not answer")
EOF
}

# start_pusher NAME [flags...] < extra config: sets $url and $pid.
start_pusher() {
    local name=$1 port
    shift
    port=$(free_port)
    { echo "listen = \"127.0.0.1:$port\""; cat; } >"$work/$name.toml"
    MADX_LOG=warn "$PUSHER" serve --config "$work/$name.toml" "$@" >"$work/$name.log" 2>&1 &
    pid=$!
    pids+=("$pid")
    url="http://127.0.0.1:$port"
    wait_for "$url/readyz"
}

start_floor() {
    local port
    port=$(free_port)
    "$FLOOR" "127.0.0.1:$port" >"$work/floor.log" 2>&1 &
    floor_pid=$!
    pids+=("$floor_pid")
    floor_url="http://127.0.0.1:$port"
    sleep 0.5
}

start_redis() {
    redis_port=$(free_port)
    redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no \
        --dir "$work" >"$work/redis.log" 2>&1 &
    redis_pid=$!
    pids+=("$redis_pid")
    sleep 0.5
}

run() { # bench arguments...
    "$BENCH" "$@" | tee -a "$OUT" >/dev/null
}

stop() { # pid
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# start_redis_cluster N: N primaries (no replicas), cluster mode; sets
# $cluster_url (redis-cluster://...) and $cluster_pids.
start_redis_cluster() {
    local n=$1 ports=() port seeds=""
    cluster_pids=()
    for _ in $(seq "$n"); do
        # The cluster bus listens on port + 10000.
        port=$(python3 -c 'import socket
while True:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]
    if p < 55000:
        b = socket.socket()
        try:
            b.bind(("127.0.0.1", p + 10000)); print(p); break
        except OSError: pass')
        mkdir -p "$work/cluster-$port"
        redis-server --bind 127.0.0.1 --port "$port" --cluster-enabled yes \
            --cluster-node-timeout 2000 --save '' --appendonly no \
            --dir "$work/cluster-$port" >"$work/cluster-$port.log" 2>&1 &
        cluster_pids+=($!)
        pids+=($!)
        ports+=("127.0.0.1:$port")
        seeds="$seeds${seeds:+,}127.0.0.1:$port"
    done
    sleep 0.5
    redis-cli --cluster create "${ports[@]}" --cluster-yes >/dev/null
    for port in "${ports[@]}"; do
        until redis-cli -p "${port#*:}" cluster info | grep -q cluster_state:ok; do sleep 0.1; done
    done
    cluster_url="redis-cluster://$seeds"
}

# cpu_ticks PID...: user + system CPU of each process so far, in clock
# ticks, one per line.
cpu_ticks() {
    local pid
    for pid in "$@"; do
        awk '{print $14 + $15}' "/proc/$pid/stat"
    done
}

# hold_sockets LABEL SOCKETS "URL PID"...: one idle generator per node,
# SOCKETS each, held 20 s after its ramp; the most sockets open at once
# over the nodes, from their metrics while the generators run, is written
# as a `cluster_sockets` line.
hold_sockets() {
    local label=$1 sockets=$2 node node_url node_pid generator watcher
    shift 2
    local generators=() urls=()
    rm -f "$work/hold-done"
    for node in "$@"; do
        read -r node_url node_pid <<<"$node"
        run --label "$label" --target "$node_url" --host-pid "$node_pid" \
            idle --sockets "$sockets" --hold-secs 20 &
        generators+=($!)
        urls+=("$node_url")
    done
    most_open_sockets "$label" "$work/hold-done" "${urls[@]}" &
    watcher=$!
    for generator in "${generators[@]}"; do
        wait "$generator"
    done
    touch "$work/hold-done"
    wait "$watcher"
}

# most_open_sockets LABEL DONE_FILE URL...: the most sockets open at once
# over these nodes, sampled every second from their metrics until DONE_FILE
# exists, as a JSON line.
most_open_sockets() {
    python3 - "$@" <<'PY' | tee -a "$OUT"
import json, os, sys, time, urllib.request
label, done, bases = sys.argv[1], sys.argv[2], sys.argv[3:]
def open_sockets(base):
    request = urllib.request.Request(base + "/metrics", headers={"Authorization": "Bearer bench-operator-token"})
    text = urllib.request.urlopen(request, timeout=5).read().decode()
    return sum(int(float(line.split()[-1])) for line in text.splitlines() if line.startswith("madx_sockets_open{"))
most = 0
while not os.path.exists(done):
    time.sleep(1)
    try:
        most = max(most, sum(open_sockets(base) for base in bases))
    except OSError:
        pass  # a node busy with the ramp answers next time
print(json.dumps({"scenario": "cluster_sockets", "label": label, "nodes": len(bases), "max_open_sockets": most}))
print(f"{label}: at most {most} sockets open at once over {len(bases)} nodes", file=sys.stderr)
PY
}
