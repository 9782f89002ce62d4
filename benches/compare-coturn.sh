#!/usr/bin/env bash
# Compares the Chorus STUN/TURN servers with coturn on loopback, in one run.
#
# Each server runs pinned to one core (`taskset -c $SERVER_CPU`, default 0) and the
# load generator (examples/stun-load.rs, one thread) pinned to the other (`$LOAD_CPU`,
# default 1). For every test and run, a fresh server is started, the generator sets up
# its allocations, runs `$WARMUP` s unmeasured then `$DURATION` s measured, and the
# script records, over exactly the measured time (the generator samples /proc itself):
#   - the rate: Binding responses (or relayed packets) received by the generator per s;
#   - busy % of the server's core and of the generator's core (/proc/stat, includes
#     softirq work, which on loopback runs on the sending core, and other tenants), the
#     server process's own CPU (/proc/PID/stat, all threads) and the generator's;
#   - packets per CPU-second of the server process ("per server s"): the rate divided
#     by the server process's CPU, comparable even when other load shares the core;
#   - loss: packets the generator sent but never got back (relayed or answered), in %
#     of those sent; above $MAX_LOSS % (default 0.1) it is flagged in the table and
#     repeated in a warning at the end;
#   - drops on the server's UDP sockets (/proc/net/udp, whole run): a non-zero count
#     means the generator delivered more than the server could take.
#
# Tests:
#   binding     STUN Binding requests, closed loop, as fast as the server answers
#               (coturn: plain STUN, no auth, as Chorus)
#   relay1      ChannelData client -> TURN server -> peer through 1 allocation, bursts
#               as fast as the in-flight window allows
#   relay1000   the same spread over 1,000 allocations (round-robin bursts of 8)
#   paced1000   realistic media load: 1,000 allocations, each one flow of 50 packets/s
#               of 160 bytes, the allocations' sends interleaved evenly (one every
#               20 us), one datagram per send; both servers carry the same 50,000
#               packets/s, so what differs is the server CPU they cost
#
# Ends with:
#   per server CPU-second: binding=.. relay1=.. relay1000=.. paced1000=..   (chorus/coturn)
#   ratio binding=<a> relay1=<b> relay1000=<c> paced1000=<d>
# where a, b, c are ratios of rates (chorus/coturn: the server's capacity, one core
# each) and d is the ratio of packets per server CPU-second (chorus/coturn: the rates
# are equal by design), all from medians over $RUNS runs (the median run by rate, for
# paced1000 by packets per server CPU-second), then whether each ratio meets $GOAL.
#
# Fails (non-zero exit, message on stderr) if a server does not start or dies, if
# something else already listens on $PORT, if a generator run fails or delivers
# nothing, or if the server's CPU could not be measured: every test asked for gets a
# number or the script stops.
#
# Environment (defaults): RUNS=3 DURATION=5 WARMUP=1 SERVER_CPU=0 LOAD_CPU=1
# PORT=34780 GOAL=2 MAX_LOSS=0.1 BINDING_LOAD, RELAY1_LOAD, RELAY1000_LOAD,
# PACED1000_LOAD (generator options, below), CHORUS_TURN_ARGS,
# TESTS="binding relay1 relay1000 paced1000". Needs coturn's `turnserver` and `taskset`.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
RUNS="${RUNS:-3}"
DURATION="${DURATION:-5}"
WARMUP="${WARMUP:-1}"
SERVER_CPU="${SERVER_CPU:-0}"
LOAD_CPU="${LOAD_CPU:-1}"
PORT="${PORT:-34780}"
GOAL="${GOAL:-2}"
MAX_LOSS="${MAX_LOSS:-0.1}"
TESTS="${TESTS:-binding relay1 relay1000 paced1000}"
# The same load for both servers. --gso makes the generator cheap (bursts leave in one
# sendmsg; each server still receives separate datagrams, no server enables GRO here).
BINDING_LOAD="${BINDING_LOAD:---sockets 16 --window 64 --gso}"
RELAY1_LOAD="${RELAY1_LOAD:---allocations 1 --window 512 --size 100 --gso}"
RELAY1000_LOAD="${RELAY1000_LOAD:---allocations 1000 --window 2048 --burst 8 --size 100 --gso}"
# No GSO, no bursts: one send(2) per packet, 20 us apart.
PACED1000_LOAD="${PACED1000_LOAD:---allocations 1000 --pps-per-allocation 50 --size 160}"
# Relay ports above the ephemeral range (32768-60999 by default), so the generator's
# 1,000 client sockets never take a port a server wants to relay on (both servers).
# The flags of examples/turn-server.rs: 1,000 allocations for one user from one IP
# need its quotas and its unauthenticated-request rate limit lifted (coturn has none).
CHORUS_TURN_ARGS="${CHORUS_TURN_ARGS:---bind 127.0.0.1:$PORT --relay-ip 127.0.0.1 --relay-ports 61000-65000 --realm example.org --user alice:secret --allow-loopback-peers --no-tcp --max-allocations 2000 --user-quota 2000 --rate 0 --batched}"

die() {
    echo "compare-coturn: FAILED: $*" >&2
    exit 1
}

for tool in turnserver taskset; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
if (($(nproc) < 2)); then
    die "needs two cores (server on one, load on the other)"
fi
for test in $TESTS; do
    case "$test" in
    binding | relay1 | relay1000 | paced1000) ;;
    *) die "unknown test $test (binding relay1 relay1000 paced1000)" ;;
    esac
done
# 1,000 allocations need a client socket each (and coturn a relay socket each).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

work="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

echo "building (release) ..." >&2
(cd "$root" && cargo build --release -q --example stun-server --example stun-load \
    --example turn-server)
bin="$target/release/examples"
"$bin/turn-server" --help 2>&1 | grep -q -- --batched ||
    die "examples/turn-server.rs has no --batched (set CHORUS_TURN_ARGS to match its flags)"

port_hex="$(printf '%04X' "$PORT")"

# Drops summed over the UDP sockets bound to $PORT (the server's listening sockets).
udp_drops() {
    awk -v p=":$port_hex" 'NR > 1 && substr($2, length($2) - 4) == p { d += $NF } END { print d + 0 }' \
        /proc/net/udp
}

port_in_use() {
    awk -v p=":$port_hex" 'NR > 1 && substr($2, length($2) - 4) == p { f = 1 } END { exit !f }' \
        /proc/net/udp
}

wait_for_port() {
    for _ in $(seq 100); do
        port_in_use && return 0
        kill -0 "$server_pid" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

start_server() {
    local log="$1"
    shift
    # Another process on the port would answer in place of the server under test.
    port_in_use && die "something already listens on UDP $PORT (set PORT)"
    taskset -c "$SERVER_CPU" "$@" >"$log" 2>&1 &
    server_pid=$!
    pids+=("$server_pid")
    if ! wait_for_port; then
        echo "compare-coturn: $1 did not start on UDP $PORT; its output:" >&2
        tail -n 5 "$log" >&2
        die "server did not start"
    fi
}

stop_server() {
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    # Wait until the port is free for the next server.
    for _ in $(seq 100); do
        port_in_use || return 0
        sleep 0.05
    done
    die "UDP $PORT still in use after stopping the server"
}

start_coturn() {
    start_server "$work/coturn.log" turnserver -n \
        --listening-ip 127.0.0.1 --listening-port "$PORT" --relay-ip 127.0.0.1 \
        --min-port 61000 --max-port 65000 \
        --lt-cred-mech --user alice:secret --realm example.org --allow-loopback-peers \
        --no-tls --no-dtls --no-tcp --no-tcp-relay --no-cli --no-software-attribute \
        --relay-threads 1 --log-file "$work/turn.log" --no-stdout-log
}

start_chorus() {
    case "$1" in
    binding)
        start_server "$work/chorus.log" "$bin/stun-server" --bind "127.0.0.1:$PORT" \
            --rate 0 --batched
        ;;
    *)
        # shellcheck disable=SC2086 # word splitting of the argument list is intended
        start_server "$work/chorus.log" "$bin/turn-server" $CHORUS_TURN_ARGS
        ;;
    esac
}

# field <name> <line>: the value of name=value in a generator result line.
field() {
    sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"
}

# measure <test> <server>: one run; appends
# "rate server_core gen_core server_cpu gen_cpu drops per_server_s loss_pct" to
# $work/<test>.<server> (CPU columns in % of one core).
measure() {
    local test="$1" server="$2" mode load
    case "$test" in
    binding) mode=binding load="$BINDING_LOAD" ;;
    relay1) mode=relay load="$RELAY1_LOAD" ;;
    relay1000) mode=relay load="$RELAY1000_LOAD" ;;
    paced1000) mode=relay load="$PACED1000_LOAD" ;;
    esac
    if [[ "$server" == coturn ]]; then start_coturn; else start_chorus "$test"; fi
    local d0 d1 out
    d0="$(udp_drops)"
    : >"$work/load.err"
    # shellcheck disable=SC2086 # word splitting of the option list is intended
    if ! out="$(taskset -c "$LOAD_CPU" "$bin/stun-load" "$mode" --server "127.0.0.1:$PORT" \
        --duration "$DURATION" --warmup "$WARMUP" --watch-pid "$server_pid" \
        --watch-core "$SERVER_CPU" --watch-core "$LOAD_CPU" $load 2>"$work/load.err")"; then
        sed 's/^/  /' "$work/load.err" >&2
        die "$test on $server: the load generator failed"
    fi
    cat "$work/load.err" >>"$work/load.log"
    kill -0 "$server_pid" 2>/dev/null || die "$test on $server: the server died during the run"
    d1="$(udp_drops)"
    stop_server
    echo "$test $server: $out" >>"$work/raw.log"
    local rate sent secs lost scpu
    rate="$(field rate "$out")"
    sent="$(field sent "$out")"
    secs="$(field secs "$out")"
    lost="$(field lost "$out")"
    scpu="$(field server_cpu "$out")"
    [[ -n "$rate" && "$rate" != 0 ]] || die "$test on $server delivered nothing: $out"
    [[ -n "$scpu" ]] && awk -v c="$scpu" 'BEGIN { exit !(c > 0) }' ||
        die "$test on $server: no server CPU measured: $out"
    awk -v r="$rate" -v s="$sent" -v t="$secs" -v l="$lost" -v sc="$scpu" \
        -v gc="$(field cpu "$out")" -v sb="$(field "core$SERVER_CPU" "$out")" \
        -v gb="$(field "core$LOAD_CPU" "$out")" -v d=$((d1 - d0)) 'BEGIN {
            printf "%d %.0f %.0f %.1f %.0f %d %.0f %.3f\n", r, 100 * sb, 100 * gb, 100 * sc,
                100 * gc, d, r / sc, (s * t > 0 ? 100 * l / (s * t) : 0)
        }' >>"$work/$test.$server"
}

# The median run, whole (its other columns go with it), by column $2.
median_row() {
    sort -g -k"$2,$2" "$1" | awk '{ a[NR] = $0 } END { print a[int((NR + 1) / 2)] }'
}

for run in $(seq "$RUNS"); do
    for test in $TESTS; do
        for server in coturn chorus; do
            echo "run $run/$RUNS: $test on $server ..." >&2
            measure "$test" "$server"
        done
    done
done

echo
echo "loopback, server on core $SERVER_CPU, load generator on core $LOAD_CPU;" \
    "medians of $RUNS runs of ${DURATION}s (paced1000: the run with the median per server s)"
printf '%-10s %-7s %10s %12s %10s %10s %9s %10s %13s %9s\n' test server "rate/s" \
    "server core" "server %" "load core" "load cpu" "srv drops" "per server s" "loss"
declare -A med eff
warnings=()
for test in $TESTS; do
    key=1
    [[ "$test" == paced1000 ]] && key=7
    for server in coturn chorus; do
        f="$work/$test.$server"
        [[ -s "$f" ]] || die "no result for $test on $server"
        read -r rate sbusy gbusy pcpu gcpu drops per loss <<<"$(median_row "$f" "$key")"
        med["$test.$server"]="$rate"
        eff["$test.$server"]="$per"
        flag=""
        if awk -v l="$loss" -v m="$MAX_LOSS" 'BEGIN { exit !(l > m) }'; then
            flag=" LOSS"
            warnings+=("$test on $server lost $loss % of the packets sent (more than $MAX_LOSS %)")
        fi
        printf '%-10s %-7s %10s %11s%% %9s%% %9s%% %8s%% %10s %13s %8s%%%s\n' "$test" \
            "$server" "$rate" "$sbusy" "$pcpu" "$gbusy" "$gcpu" "$drops" "$per" "$loss" "$flag"
    done
done
echo
echo "raw generator lines:"
sed 's/^/  /' "$work/raw.log"

ratio() {
    local -n m="$2"
    awk -v c="${m[$1.chorus]}" -v t="${m[$1.coturn]}" 'BEGIN { printf "%.2f", c / t }'
}
per_line="per server CPU-second (chorus/coturn):"
ratio_line="ratio"
goal_line="goal >= ${GOAL}x coturn:"
for test in $TESTS; do
    per_line+=" $test=$(ratio "$test" eff)"
    if [[ "$test" == paced1000 ]]; then r="$(ratio "$test" eff)"; else r="$(ratio "$test" med)"; fi
    ratio_line+=" $test=$r"
    if awk -v r="$r" -v g="$GOAL" 'BEGIN { exit !(r >= g) }'; then
        goal_line+=" $test=met"
    else
        goal_line+=" $test=NOT-met"
    fi
done
echo
for w in "${warnings[@]}"; do
    echo "warning: $w"
done
echo "$per_line"
echo "$goal_line"
echo "$ratio_line"
