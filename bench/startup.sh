#!/usr/bin/env bash
# Start-up time of a node with and without the compile cache: from launch
# to the "listening" line (plugins loaded, port bound), in rounds.
#
#   bench/startup.sh [ROUTER.wasm] [ROUNDS]
#
# Without ROUTER the built-in components are loaded. Each round starts a
# node with no cache, one with an empty cache (it compiles and writes the
# entries) and one with that cache filled. Needs $PUSHER (default
# target/release/madx-pusher); run it on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."

PUSHER=${PUSHER:-target/release/madx-pusher}
router=${1:-}
rounds=${2:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

flags=(serve --listen 127.0.0.1:0)
[ -n "$router" ] && flags+=(--router-component "$router")

# ready_ms [extra flags...]: milliseconds until the node says it listens.
ready_ms() {
    local started pid
    started=$(date +%s%N)
    "$PUSHER" "${flags[@]}" "$@" >"$work/node.log" 2>&1 &
    pid=$!
    until grep -q listening "$work/node.log"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            cat "$work/node.log" >&2
            exit 1
        fi
        sleep 0.005
    done
    echo $((($(date +%s%N) - started) / 1000000))
    kill -INT "$pid"
    wait "$pid" || true
}

echo "component: ${router:-built-in}"
echo "round  no cache  empty cache  filled cache  (ms to listening)"
for round in $(seq "$rounds"); do
    rm -rf "$work/cache"
    none=$(ready_ms)
    cold=$(ready_ms --compile-cache "$work/cache")
    warm=$(ready_ms --compile-cache "$work/cache")
    printf '%5d  %8d  %11d  %12d\n' "$round" "$none" "$cold" "$warm"
done
echo "cache size: $(du -sh "$work/cache" | cut -f1)"
