#!/usr/bin/env bash
# Measures libopus 1.5+'s loss tools (Deep REDundancy, the deep PLC, OSCE) on the
# media-quality example's loss patterns, for docs/media.md.
#
#   benches/media-dred.sh [seeds]          (default seeds: 1 2 3 4 5)
#   benches/media-dred.sh --build-only     (builds target/media-dred/media-dred)
#
# 1. Gets libopus 1.6.1 as the `opusic-sys` 0.7.7 crate bundles it (with its DNN
#    weights), through cargo from crates.io, and builds it with cmake with
#    -DOPUS_DRED=ON -DOPUS_OSCE=ON into target/libopus-dred (cached).
# 2. Builds benches/media-dred.c against it.
# 3. Per condition and seed, runs the media-quality example with --fates: which
#    frames were in the jitter buffer at their turn, with --plc-only (the path's
#    losses and late packets) or with its RS FEC controller (what FEC left, to try the
#    DNN decoder on top of packet FEC). media-dred then encodes the same speech with libopus 1.6.1 and decodes
#    it along that pattern in each mode below, and benches/media-quality-pesq.py
#    scores it (PESQ-WB). A lookahead of L frames means the jitter buffer holds
#    each frame L frames longer (L x 20 ms more added delay) so that a later packet's
#    LBRR or DRED can rebuild it.
#
# Why a C harness: the workspace forbids `unsafe`, and the safe `opus` crate (0.4,
# over opusic-sys) exposes neither the DRED calls nor the decoder complexity that
# switches the deep PLC and OSCE on (docs/media.md).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
seeds="${*:-1 2 3 4 5}"
[ "${1:-}" = --build-only ] && seeds=""
lib="$target/libopus-dred"
work="$target/media-dred"
mkdir -p "$lib" "$work"

if [ ! -f "$lib/install/lib/libopus.a" ]; then
    # The crate's sources, through cargo (crates.io is the only source needed).
    proj="$lib/fetch"
    mkdir -p "$proj/src"
    printf '[package]\nname = "fetch-opusic"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\nopusic-sys = { version = "=0.7.7", default-features = false }\n[workspace]\n' >"$proj/Cargo.toml"
    echo 'fn main() {}' >"$proj/src/main.rs"
    (cd "$proj" && cargo fetch -q)
    src="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/opusic-sys-0.7.7/opus | head -1)"
    cmake -S "$src" -B "$lib/build" -DCMAKE_BUILD_TYPE=Release -DOPUS_DRED=ON -DOPUS_OSCE=ON \
        -DOPUS_BUILD_TESTING=OFF -DOPUS_BUILD_PROGRAMS=OFF -DCMAKE_INSTALL_PREFIX="$lib/install" \
        -DCMAKE_INSTALL_LIBDIR=lib >/dev/null
    cmake --build "$lib/build" -j2 >/dev/null
    cmake --install "$lib/build" >/dev/null
fi
cc -O2 -Wall -o "$work/media-dred" "$root/benches/media-dred.c" -I"$lib/install/include/opus" \
    "$lib/install/lib/libopus.a" -lm
# `--build-only`: the harness for benches/quality-per-byte.py, nothing measured.
[ "${1:-}" = --build-only ] && exit 0

"$root/benches/media-speech.sh" "$work" >/dev/null
rm -f "$work"/fates-*.txt
(cd "$root" && cargo build -q --release --example media-quality)
example="$target/release/examples/media-quality"
pesq() { python3 "$root/benches/media-quality-pesq.py" "$work/ref.wav" "$1" | awk '{print $2}'; }

# mode name | fates (plc: the path's pattern; rs: what the RS controller left) |
# bitrate loss% dred(10 ms) decoder-complexity lookahead lbrr
modes=(
    "1.6.1 PLC|plc|32000 0 0 0 0 0"
    "1.6.1 deep PLC (complexity 5)|plc|32000 0 0 5 0 0"
    "1.6.1 deep PLC + OSCE NoLACE (complexity 7)|plc|32000 0 0 7 0 0"
    "1.6.1 LBRR, L=1|plc|32000 LOSS 0 7 1 1"
    "DRED 1 s in 32 kbit/s, L=1|plc|32000 LOSS 100 7 1 0"
    "DRED 1 s in 32 kbit/s, L=2|plc|32000 LOSS 100 7 2 0"
    "DRED 1 s in 32 kbit/s, L=5|plc|32000 LOSS 100 7 5 0"
    "DRED 1 s in 64 kbit/s, L=2|plc|64000 LOSS 100 7 2 0"
    "DRED 1 s in 64 kbit/s, L=5|plc|64000 LOSS 100 7 5 0"
    "RS controller, 1.6.1 PLC|rs|32000 0 0 0 0 0"
    "RS controller, deep PLC + OSCE NoLACE|rs|32000 0 0 7 0 0"
)
conditions=("clean|--loss 0|0" "10 % random|--loss 10%|10" "20 % GE, bursts of 3|--loss 20% --burst 3|20")

echo "| condition | mode | PESQ-WB mean (min-max) | media bitrate | frames rebuilt (LBRR / DRED) of missing, per seed |"
echo "|---|---|---|---|---|"
for c in "${conditions[@]}"; do
    IFS='|' read -r cname cargs closs <<<"$c"
    for m in "${modes[@]}"; do
        IFS='|' read -r mname source margs <<<"$m"
        margs="${margs/LOSS/$closs}"
        if [ "$cname" = clean ] && [[ "$mname" != 1.6.1\ PLC && "$mname" != *complexity* ]]; then
            continue
        fi
        scores=() rate="" counts=""
        for s in $seeds; do
            fates="$work/fates-${closs}-$source-$s.txt"
            if [ ! -f "$fates" ]; then
                protection=--plc-only
                [ "$source" = rs ] && protection=
                # shellcheck disable=SC2086
                "$example" --input "$work/speech48.wav" $cargs --seed "$s" $protection --no-pesq \
                    --reference "$work/ref.wav" --fates "$fates" >/dev/null
            fi
            # shellcheck disable=SC2086
            out="$("$work/media-dred" "$work/ref.wav" "$fates" "$work/out.wav" $margs 150)"
            scores+=("$(pesq "$work/out.wav")")
            rate="$(awk '/media bitrate/ {print $3}' <<<"$out")"
            counts="$counts $(awk '/lost frames/ {gsub(":", ""); print $4 "/" $7 " of " $3}' <<<"$out")"
        done
        stats="$(printf '%s\n' "${scores[@]}" | awk '{s+=$1; if(min==""||$1<min)min=$1; if($1>max)max=$1} END {printf "%.2f (%.2f-%.2f)", s/NR, min, max}')"
        echo "| $cname | $mname | $stats | $rate kbit/s |$counts |"
    done
done
