#!/usr/bin/env bash
# Round robin against load balancing, in one command: the guide's experiment
# (docs/experiments.md, docs/experimentos.md) without its eight terminals.
#
# One broker, one slow worker (200 ms a request) and two fast ones (5 ms),
# four clients asking 25 times each, as fast as they can (--interval-ms 0):
# first with `broker --mode proxy` (round robin, REP workers), then with
# `broker --mode lb` (load balancing, lb workers). For each, it prints what
# each worker served and how long each client took: the lines the roles
# themselves print, without their timestamps.
#
#   scripts/round-robin-vs-lb.sh                # ports 5555 and 5556, as the exercises
#   FRONTEND_PORT=6555 BACKEND_PORT=6556 scripts/round-robin-vs-lb.sh
#
# Run it from anywhere in the repository; it builds the roles with cargo first.
# Every process it starts is stopped when it ends, Ctrl-C included.
set -eu

cd "$(dirname "$0")/.."
frontend_port=${FRONTEND_PORT:-5555}
backend_port=${BACKEND_PORT:-5556}
cargo build --quiet --bin broker --bin worker --bin broker_client
bin=${CARGO_TARGET_DIR:-target}/debug
logs=$(mktemp -d)
pids=()

stop_all() {
    for pid in "${pids[@]}"; do
        kill -INT "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    pids=()
}
trap 'stop_all; rm -rf "$logs"' EXIT
trap 'exit 130' INT TERM

# Waits (10 s at most) until the broker's log has `count` lines with `text`.
wait_for() {
    local text=$1 count=$2
    for _ in $(seq 100); do
        if [ "$(grep -c -- "$text" "$logs/broker" || true)" -ge "$count" ]; then
            return 0
        fi
        if ! kill -0 "${pids[0]}" 2>/dev/null; then
            echo "the broker stopped:" >&2
            cat "$logs/broker" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "after 10 s, fewer than $count lines with \"$text\" in the broker's log:" >&2
    cat "$logs/broker" >&2
    exit 1
}

# Log lines without their timestamp and level.
plain() {
    sed -E 's/^[0-9TZ:.-]+ +[A-Z]+ +//'
}

for mode in proxy lb; do
    if [ "$mode" = proxy ]; then
        echo "== broker --mode proxy: round robin, REP workers"
        worker_mode=plain
        ready="backend: .* connected"
    else
        echo "== broker --mode lb: load balancing, lb workers"
        worker_mode=lb
        ready=") ready"
    fi
    "$bin/broker" --mode "$mode" --frontend "tcp://*:$frontend_port" \
        --backend "tcp://*:$backend_port" 2>"$logs/broker" &
    pids+=($!)
    for worker in slow:200 fast1:5 fast2:5; do
        "$bin/worker" --mode "$worker_mode" --connect "tcp://localhost:$backend_port" \
            --name "${worker%%:*}" --work-ms "${worker##*:}" 2>"$logs/${worker%%:*}" &
        pids+=($!)
    done
    # Every worker connected first: a broker hands requests only to the
    # workers it has at that moment.
    wait_for "$ready" 3
    clients=()
    for n in 1 2 3 4; do
        "$bin/broker_client" --connect "tcp://localhost:$frontend_port" --name "client$n" \
            --interval-ms 0 --count 25 >"$logs/client$n" 2>&1 &
        clients+=($!)
    done
    for pid in "${clients[@]}"; do
        wait "$pid" || true
    done
    stop_all
    grep -h "served" "$logs/slow" "$logs/fast1" "$logs/fast2" | plain
    grep -h " done: " "$logs"/client? | plain
done
