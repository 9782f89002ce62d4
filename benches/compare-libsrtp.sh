#!/usr/bin/env bash
# Compares Chorus's SRTP with libsrtp built against OpenSSL, on this machine, in one run.
#
# 1. Builds libsrtp from Debian's source package (`apt-get source libsrtp2`, fetched
#    through a temporary deb-src entry for the mirror apt already uses) with
#    `./configure --enable-openssl`: its fastest ordinary build. Debian's own
#    libsrtp2 is built with NSS, which is several times slower; if it is installed
#    its numbers are printed too, for reference only.
# 2. Builds benches/libsrtp-bench.c against it and runs it.
# 3. Runs `cargo bench --bench srtp` for the protect and unprotect groups and reads
#    criterion's medians from target/criterion/*/new/estimates.json. Any failed run
#    (libsrtp's or Chorus's), or an estimate this run did not write, stops the script
#    with an error: it never prints a ratio from a stale result.
# 4. Prints a table and one line per suite and size:
#      ratio <suite> <payload bytes> protect=<chorus/libsrtp> unprotect=<chorus/libsrtp>
#    (ratios of throughput: above 1 means Chorus is faster).
#
# Both benchmarks do the same work per packet (see the comments at the top of
# benches/srtp.rs and benches/libsrtp-bench.c). That includes the sender's index check:
# libsrtp's srtp_protect checks every index against the stream's replay database and
# refuses one already used (unless allow_repeat_tx), and since issue 14 Chorus's
# protect refuses an index at or below the highest sent, so both pay for it. Needs root for apt-get (as on the
# project's machines). The libsrtp build is cached in target/libsrtp-openssl.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
cache="$target/libsrtp-openssl"
mkdir -p "$cache"

need=(build-essential dpkg-dev libssl-dev pkg-config)
if ! dpkg -s "${need[@]}" >/dev/null 2>&1; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}"
fi

src="$(find "$cache" -maxdepth 1 -type d -name 'libsrtp2-*' | head -n 1)"
if [[ -z "$src" || ! -f "$src/libsrtp2.a" ]]; then
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    # A deb-src entry for the release's main component, on the mirror apt already
    # uses, in a private apt state so the system's lists are left alone.
    codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")"
    uri="$(
        {
            awk -v s="$codename" '
                /^URIs:/ { uri = $2 }
                /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == s) print uri }
            ' /etc/apt/sources.list.d/*.sources 2>/dev/null || true
            awk -v s="$codename" '$1 == "deb" && $3 == s { print $2 }' \
                /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true
        } | head -n 1
    )"
    if [[ -z "$uri" ]]; then
        echo "no apt source for $codename found to derive a deb-src entry from" >&2
        exit 1
    fi
    mkdir -p "$work/sources.d" "$work/lists/partial" "$work/cache/archives/partial"
    cat >"$work/sources.d/deb-src.sources" <<EOF
Types: deb-src
URIs: $uri
Suites: $codename
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    apt_private=(
        -o "Dir::Etc::SourceList=/dev/null"
        -o "Dir::Etc::SourceParts=$work/sources.d"
        -o "Dir::State::Lists=$work/lists"
        -o "Dir::Cache=$work/cache"
    )
    apt-get "${apt_private[@]}" update
    (cd "$cache" && apt-get "${apt_private[@]}" source libsrtp2)
    src="$(find "$cache" -maxdepth 1 -type d -name 'libsrtp2-*' | head -n 1)"
    (cd "$src" && ./configure --enable-openssl >/dev/null && make -j"$(nproc)" libsrtp2.a >/dev/null)
fi
grep -q '^#define OPENSSL 1' "$src/crypto/include/config.h" 2>/dev/null \
    || grep -q 'OPENSSL 1' "$src/config.h" 2>/dev/null \
    || { echo "libsrtp in $src is not built with OpenSSL" >&2; exit 1; }

bench_c="$root/benches/libsrtp-bench.c"
cc -O2 -I"$src/include" "$bench_c" "$src/libsrtp2.a" -lcrypto -o "$cache/libsrtp-bench-openssl"
echo "== libsrtp $(basename "$src") with OpenSSL $(openssl version | awk '{print $2}')"
"$cache/libsrtp-bench-openssl" | tee "$cache/openssl.txt"

if pkg-config --exists libsrtp2 2>/dev/null; then
    cc -O2 -I"$(pkg-config --variable=includedir libsrtp2)/srtp2" "$bench_c" \
        $(pkg-config --libs libsrtp2) -o "$cache/libsrtp-bench-system"
    echo "== Debian's libsrtp2 $(pkg-config --modversion libsrtp2) (NSS), for reference"
    "$cache/libsrtp-bench-system" | tee "$cache/system.txt"
fi

echo "== Chorus (cargo bench --bench srtp)"
# Criterion's estimates from earlier runs stay in target/criterion: only files written
# after this marker count, so a bench that fails or skips a case can never be reported
# with a stale number.
marker="$cache/chorus-bench.started"
touch "$marker"
log="$cache/chorus-bench.log"
if ! (cd "$root" && cargo bench --bench srtp -- 'srtp_(protect|unprotect)/') >"$log" 2>&1; then
    cat "$log" >&2
    echo "cargo bench --bench srtp failed (log above, kept in $log)" >&2
    exit 1
fi
grep -E '^srtp_|time:' "$log"

# The median time per packet (ns) criterion estimated for group/suite/payload in this
# run; exits if that case did not run now.
median_ns() {
    local file="$target/criterion/$1/$2/$3/new/estimates.json"
    [[ -f "$file" ]] || { echo "missing $file" >&2; exit 1; }
    [[ "$file" -nt "$marker" ]] || { echo "stale $file: not written by this run" >&2; exit 1; }
    local ns
    ns="$(tr -d ' \n' <"$file" | sed -E 's/.*"median":\{"confidence_interval":\{[^}]*\},"point_estimate":([0-9.eE+-]+).*/\1/')"
    [[ "$ns" =~ ^[0-9.eE+-]+$ ]] || { echo "no median in $file" >&2; exit 1; }
    echo "$ns"
}

echo
printf '%-26s %7s %12s %12s %12s %12s\n' suite payload \
    "chorus prot" "libsrtp prot" "chorus unpr" "libsrtp unpr"
lines=()
while read -r op suite payload ns; do
    [[ "$op" == protect ]] || continue
    l_prot="$ns"
    l_unprot="$(awk -v s="$suite" -v p="$payload" '$1 == "unprotect" && $2 == s && $3 == p { print $4 }' "$cache/openssl.txt")"
    [[ -n "$l_unprot" ]] || { echo "libsrtp printed no unprotect time for $suite $payload" >&2; exit 1; }
    c_prot="$(median_ns srtp_protect "$suite" "$payload")"
    c_unprot="$(median_ns srtp_unprotect "$suite" "$payload")"
    printf '%-26s %7s %9.1f ns %9.1f ns %9.1f ns %9.1f ns\n' "$suite" "$payload" \
        "$c_prot" "$l_prot" "$c_unprot" "$l_unprot"
    lines+=("$(awk -v s="$suite" -v p="$payload" -v cp="$c_prot" -v lp="$l_prot" \
        -v cu="$c_unprot" -v lu="$l_unprot" \
        'BEGIN { printf "ratio %s %s protect=%.2f unprotect=%.2f", s, p, lp / cp, lu / cu }')")
done <"$cache/openssl.txt"
(( ${#lines[@]} > 0 )) || { echo "libsrtp printed no protect times" >&2; exit 1; }
echo
printf '%s\n' "${lines[@]}"
