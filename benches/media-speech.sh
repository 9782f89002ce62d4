#!/usr/bin/env bash
# Generates the test speech of the media-quality measurements (docs/performance.md,
# chorus-media quality section): about 17 s of English (the first seven Harvard sentences, list 1,
# IEEE 1969), spoken by espeak-ng (two voices, alternating), with 300 ms of silence
# between sentences, as 16-bit mono WAV at 48 kHz and 16 kHz.
#
#   benches/media-speech.sh [out-dir]      (default: target/media-speech)
#
# Writes <out-dir>/speech48.wav and <out-dir>/speech16.wav. Needs espeak-ng and sox
# (`apt-get install espeak-ng sox`); installs them when run as root and missing. The
# output is deterministic for a given espeak-ng/sox version (1.51 / 14.4.2 on Debian
# bookworm when measured). No WAV file is kept in git.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-${CARGO_TARGET_DIR:-$root/target}/media-speech}"
mkdir -p "$out"

if ! command -v espeak-ng >/dev/null || ! command -v sox >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends espeak-ng sox
    else
        echo "media-speech.sh: needs espeak-ng and sox" >&2
        exit 1
    fi
fi

sentences=(
    "The birch canoe slid on the smooth planks."
    "Glue the sheet to the dark blue background."
    "It's easy to tell the depth of a well."
    "These days a chicken leg is a rare dish."
    "Rice is often served in round bowls."
    "The juice of lemons makes fine punch."
)
voices=("en-us" "en-gb+f3")

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
parts=()
for i in "${!sentences[@]}"; do
    voice="${voices[$((i % 2))]}"
    espeak-ng -v "$voice" -s 165 -w "$work/s$i.raw.wav" "${sentences[$i]}"
    # Resample to 48 kHz mono 16-bit (sox's high-quality rate converter), pad with
    # 300 ms of silence after each sentence.
    sox -D -R "$work/s$i.raw.wav" -r 48000 -c 1 -b 16 "$work/s$i.wav" rate -v pad 0 0.3
    parts+=("$work/s$i.wav")
done
# 200 ms of lead-in silence, then the sentences; normalised to -3 dBFS peak.
sox -D -R -n -r 48000 -c 1 -b 16 "$work/lead.wav" trim 0 0.2
sox -D -R "$work/lead.wav" "${parts[@]}" "$out/speech48.wav" norm -3
sox -D -R "$out/speech48.wav" -r 16000 "$out/speech16.wav" rate -v
echo "wrote $out/speech48.wav and $out/speech16.wav ($(soxi -D "$out/speech48.wav") s)"
