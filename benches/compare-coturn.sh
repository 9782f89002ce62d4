#!/usr/bin/env bash
# Compares the Chorus STUN/TURN servers with coturn on loopback, in one run.
#
# Each server runs pinned to one core (`taskset -c $SERVER_CPU`, default 0) and the
# load generator (examples/stun-load.rs, one thread, sendmmsg/recvmmsg) pinned to the
# other (`$LOAD_CPU`, default 1). For every test and run, a fresh server is started,
# the generator runs `$WARMUP` s unmeasured then `$DURATION` s measured, and the script
# records:
#   - the rate: Binding responses (or relayed packets) received by the generator per s;
#   - busy % of the server's core and of the generator's core (/proc/stat, includes
#     softirq work, which on loopback runs on the sending core) and the server
#     process's own CPU (/proc/PID/stat);
#   - packets per CPU-second of the server process ("per server s"): the same ratio
#     without the noise of other load on the server's core;
#   - drops on the server's UDP sockets (/proc/net/udp): a non-zero count means the
#     generator delivered more than the server could take, i.e. the server was the
#     bottleneck, not the generator.
#
# Tests:
#   binding     STUN Binding requests (coturn: plain STUN, no auth, as Chorus)
#   relay1      ChannelData client -> TURN server -> peer through 1 allocation
#   relay1000   the same spread over 1,000 allocations (round-robin bursts)
# The Chorus relay tests run only when examples/turn-server.rs exists and its --help
# mentions --batched (set CHORUS_TURN_ARGS to match its flags); otherwise they print
# "relay: chorus turn-server not available yet".
#
# Ends with:  ratio binding=<chorus/coturn> relay=<chorus/coturn>
# (medians over $RUNS runs; relay is the lower of the relay1 and relay1000 ratios).
#
# Environment (defaults): RUNS=3 DURATION=5 WARMUP=1 SERVER_CPU=0 LOAD_CPU=1
# PORT=34780 BINDING_LOAD, RELAY1_LOAD, RELAY1000_LOAD (generator options, below),
# TESTS="binding relay1 relay1000". Needs coturn's `turnserver` and `taskset`.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
RUNS="${RUNS:-3}"
DURATION="${DURATION:-5}"
WARMUP="${WARMUP:-1}"
SERVER_CPU="${SERVER_CPU:-0}"
LOAD_CPU="${LOAD_CPU:-1}"
PORT="${PORT:-34780}"
TESTS="${TESTS:-binding relay1 relay1000}"
# The same load for both servers. --gso makes the generator cheap (bursts leave in one
# sendmsg; each server still receives separate datagrams, no server enables GRO here).
BINDING_LOAD="${BINDING_LOAD:---sockets 16 --window 64 --gso}"
RELAY1_LOAD="${RELAY1_LOAD:---allocations 1 --window 512 --size 100 --gso}"
RELAY1000_LOAD="${RELAY1000_LOAD:---allocations 1000 --window 2048 --burst 8 --size 100 --gso}"
# Relay ports above the ephemeral range (32768-60999 by default), so the generator's
# 1,000 client sockets never take a port a server wants to relay on (both servers).
# The flags of examples/turn-server.rs: 1,000 allocations for one user from one IP
# need its quotas and its unauthenticated-request rate limit lifted (coturn has none).
CHORUS_TURN_ARGS="${CHORUS_TURN_ARGS:---bind 127.0.0.1:$PORT --relay-ip 127.0.0.1 --relay-ports 61000-65000 --realm example.org --user alice:secret --allow-loopback-peers --no-tcp --max-allocations 2000 --user-quota 2000 --rate 0 --batched}"

for tool in turnserver taskset; do
    command -v "$tool" >/dev/null || { echo "compare-coturn: $tool not found" >&2; exit 1; }
done
if (($(nproc) < 2)); then
    echo "compare-coturn: needs two cores (server on one, load on the other)" >&2
    exit 1
fi
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

examples=(--example stun-server --example stun-load)
chorus_turn=0
if [[ -f "$root/examples/turn-server.rs" ]]; then
    examples+=(--example turn-server)
fi
echo "building (release) ..." >&2
(cd "$root" && cargo build --release -q "${examples[@]}")
bin="$target/release/examples"
if [[ -x "$bin/turn-server" ]] && "$bin/turn-server" --help 2>&1 | grep -q -- --batched; then
    chorus_turn=1
fi

port_hex="$(printf '%04X' "$PORT")"

# Drops summed over the UDP sockets bound to $PORT (the server's listening sockets).
udp_drops() {
    awk -v p=":$port_hex" 'NR > 1 && substr($2, length($2) - 4) == p { d += $NF } END { print d + 0 }' \
        /proc/net/udp
}

# "busy total" jiffies of one core.
core_ticks() {
    awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t }' /proc/stat
}

proc_ticks() {
    awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0
}

wait_for_port() {
    for _ in $(seq 100); do
        if awk -v p=":$port_hex" 'NR > 1 && substr($2, length($2) - 4) == p { f = 1 } END { exit !f }' \
            /proc/net/udp; then
            return 0
        fi
        sleep 0.05
    done
    echo "compare-coturn: nothing listens on UDP $PORT" >&2
    return 1
}

start_server() {
    local log="$1"
    shift
    taskset -c "$SERVER_CPU" "$@" >"$log" 2>&1 &
    server_pid=$!
    pids+=("$server_pid")
    if ! wait_for_port; then
        echo "compare-coturn: $1 did not start; its output:" >&2
        tail -n 5 "$log" >&2
        return 1
    fi
}

stop_server() {
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    # Wait until the port is free for the next server.
    for _ in $(seq 100); do
        awk -v p=":$port_hex" 'NR > 1 && substr($2, length($2) - 4) == p { f = 1 } END { exit !f }' \
            /proc/net/udp || return 0
        sleep 0.05
    done
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

# measure <test> <server>: one run; appends "rate server_busy gen_busy server_cpu drops"
# to $work/<test>.<server>.
measure() {
    local test="$1" server="$2" mode load
    case "$test" in
    binding) mode=binding load="$BINDING_LOAD" ;;
    relay1) mode=relay load="$RELAY1_LOAD" ;;
    relay1000) mode=relay load="$RELAY1000_LOAD" ;;
    esac
    if [[ "$server" == coturn ]]; then start_coturn; else start_chorus "$test"; fi
    local d0 s0 g0 p0 d1 s1 g1 p1 out
    d0="$(udp_drops)"
    s0="$(core_ticks "$SERVER_CPU")"
    g0="$(core_ticks "$LOAD_CPU")"
    p0="$(proc_ticks "$server_pid")"
    # shellcheck disable=SC2086
    if ! out="$(taskset -c "$LOAD_CPU" "$bin/stun-load" "$mode" --server "127.0.0.1:$PORT" \
        --duration "$DURATION" --warmup "$WARMUP" $load 2>>"$work/load.log")"; then
        echo "compare-coturn: $test on $server: generator failed: $(tail -n 1 "$work/load.log")" >&2
        out="result mode=$mode rate=0 sent=0 lost=0 cpu=0 failed"
    fi
    d1="$(udp_drops)"
    s1="$(core_ticks "$SERVER_CPU")"
    g1="$(core_ticks "$LOAD_CPU")"
    p1="$(proc_ticks "$server_pid")"
    stop_server
    echo "$test $server: $out" >>"$work/raw.log"
    local rate gcpu
    rate="$(sed -n 's/.* rate=\([0-9]*\).*/\1/p' <<<"$out")"
    gcpu="$(sed -n 's/.* cpu=\([0-9.]*\).*/\1/p' <<<"$out")"
    read -r sb st <<<"$s0"
    read -r sb1 st1 <<<"$s1"
    read -r gb gt <<<"$g0"
    read -r gb1 gt1 <<<"$g1"
    awk -v r="$rate" -v sb=$((sb1 - sb)) -v st=$((st1 - st)) -v gb=$((gb1 - gb)) \
        -v gt=$((gt1 - gt)) -v p=$((p1 - p0)) -v w="$((WARMUP + DURATION))" -v gc="$gcpu" \
        -v d=$((d1 - d0)) 'BEGIN {
            printf "%d %.0f %.0f %.0f %.0f %d\n", r, 100 * sb / (st ? st : 1),
                100 * gb / (gt ? gt : 1), p / w, 100 * gc, d
        }' >>"$work/$test.$server"
}

median_row() {
    # The run with the median rate, whole (its CPU and drop columns go with it).
    sort -n -k1,1 "$1" | awk '{ a[NR] = $0 } END { print a[int((NR + 1) / 2)] }'
}

for run in $(seq "$RUNS"); do
    for test in $TESTS; do
        for server in coturn chorus; do
            if [[ "$server" == chorus && "$test" != binding && "$chorus_turn" == 0 ]]; then
                continue
            fi
            echo "run $run/$RUNS: $test on $server ..." >&2
            measure "$test" "$server"
        done
    done
done

echo
echo "loopback, server on core $SERVER_CPU, load generator on core $LOAD_CPU;" \
    "medians of $RUNS runs of ${DURATION}s"
printf '%-10s %-7s %12s %12s %10s %11s %10s %10s %14s\n' test server "rate/s" "server core" \
    "server %" "load core" "load cpu" "srv drops" "per server s"
declare -A med eff
for test in $TESTS; do
    for server in coturn chorus; do
        f="$work/$test.$server"
        if [[ ! -s "$f" ]]; then
            printf '%-10s %-7s %12s\n' "$test" "$server" "n/a"
            continue
        fi
        read -r rate sbusy gbusy pcpu gcpu drops <<<"$(median_row "$f")"
        med["$test.$server"]="$rate"
        # Packets per CPU-second of the server process: comparable even when other
        # load shares the server's core.
        per="$(awk -v r="$rate" -v p="$pcpu" 'BEGIN { printf "%.0f", (p > 0 ? r * 100 / p : 0) }')"
        eff["$test.$server"]="$per"
        printf '%-10s %-7s %12s %11s%% %9s%% %10s%% %9s%% %10s %14s\n' "$test" "$server" "$rate" \
            "$sbusy" "$pcpu" "$gbusy" "$gcpu" "$drops" "$per"
    done
done
echo
echo "raw generator lines:"
sed 's/^/  /' "$work/raw.log"

ratio() {
    local -n m="${2:-med}"
    local c="${m[$1.chorus]:-}" t="${m[$1.coturn]:-}"
    if [[ -z "$c" || -z "$t" || "$t" == 0 ]]; then
        echo n/a
    else
        awk -v c="$c" -v t="$t" 'BEGIN { printf "%.2f", c / t }'
    fi
}
binding="$(ratio binding)"
echo "per server CPU-second: binding=$(ratio binding eff) relay1=$(ratio relay1 eff)" \
    "relay1000=$(ratio relay1000 eff) (chorus/coturn)"
relay=n/a
if [[ "$chorus_turn" == 0 ]]; then
    echo "relay: chorus turn-server not available yet"
else
    r1="$(ratio relay1)"
    r1000="$(ratio relay1000)"
    echo "relay ratios: 1 allocation=$r1 1000 allocations=$r1000"
    relay="$(awk -v a="$r1" -v b="$r1000" 'BEGIN {
        if (a == "n/a") print b; else if (b == "n/a") print a; else printf "%.2f", (a < b ? a : b) }')"
fi
echo "ratio binding=$binding relay=$relay"
