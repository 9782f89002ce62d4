#!/usr/bin/env python3
"""Quality per byte: Chorus's FEC against libopus's own loss tools at one rate.

    python3 benches/quality-per-byte.py [--seeds 1,2,3,4,5] [--rates 48000,64000]
                                        [--no-dred]

The "Quality per byte" table of docs/media.md, in one run. For each send rate
(Opus payload plus every repair byte: what `call-quality --fixed-rate` pins, so the
modes' wire rates match but for the media packets' own headers, which all modes pay
alike and the table prints), each loss condition and each seed:

- Chorus, shipped: two chorus_media::session::Session (SRTP, RTCP over the same
  impaired path, XR loss record, FEC chosen for the rate, repairs riding on media
  packets), the whole call scored (examples/call-quality.rs);
- Chorus with every repair in a packet of its own (`--no-piggyback`);
- libopus LBRR (Opus in-band FEC, the loss rate as the encoder's hint) through the
  same Session, same playout (`--fec lbrr`);
- PLC only (`--fec none`), whose loss pattern is saved (`--fates`);
- libopus DRED (1 s of neural redundancy, decoder complexity 7: deep PLC and OSCE),
  decoded along that same loss pattern by benches/media-dred.c with 1, 2 and 5
  frames of lookahead, the best kept. opusic-c's safe DRED decoder only rebuilds the
  frame right before a packet (lookahead 1), so DRED runs in the C harness, without
  jitter or time stretching: an advantage for DRED.

PESQ-WB (ITU-T P.862.2) mean and range over the seeds, the wire rate of media and
repair (UDP/IPv4 included), the redundancy (repair bytes over media bytes on the
wire) and the mean mouth-to-ear delay. Needs python3 with numpy and pesq, espeak-ng,
sox, cmake (for DRED).
"""
import argparse
import os
import re
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
# RTP header with the two extensions (20 bytes), SRTP AEAD tag (16), UDP/IPv4 (28):
# what every media packet of every mode pays, 50 times a second.
MEDIA_HEADER_BPS = (20 + 16 + 28) * 8 * 50

CONDITIONS = [
    ("10 % random loss", ["--loss", "10%"], 10),
    ("20 % loss, Gilbert-Elliott bursts of 3", ["--loss", "20%", "--burst", "3"], 20),
]


def field(line, key):
    m = re.search(key + r"=([-0-9.]+)", line)
    return float(m.group(1)) if m else float("nan")


def call(binary, speech, args, seed):
    out = subprocess.run(
        [binary, "--input", speech, "--seed", str(seed)] + args,
        check=True, capture_output=True, text=True,
    ).stdout
    line = next(l for l in out.splitlines() if l.startswith("result "))
    print(line, file=sys.stderr)
    return {
        "pesq": field(line, "pesq_wb"),
        "wire": field(line, "wire_kbps"),
        "redundancy": field(line, "fec_overhead_bytes"),
        "m2e": field(line, "mouth_to_ear_ms"),
        "residual": field(line, "residual_loss"),
    }


def pesq(ref, out):
    text = subprocess.run(
        ["python3", os.path.join(ROOT, "benches", "media-quality-pesq.py"), ref, out],
        check=True, capture_output=True, text=True,
    ).stdout
    return float(text.split()[1])


def dred(harness, speech, fates, rate, loss, lookahead, work):
    out_wav = os.path.join(work, f"dred-out-{os.getpid()}.wav")
    text = subprocess.run(
        [harness, speech, fates, out_wav, str(rate), str(loss), "100", "7",
         str(lookahead), "0", "0"],
        check=True, capture_output=True, text=True,
    ).stdout
    m = re.search(r"media bitrate\s+([0-9.]+)", text)
    kbps = float(m.group(1)) if m else float("nan")
    score = pesq(speech, out_wav)
    os.remove(out_wav)
    return {
        "pesq": score,
        "wire": kbps + MEDIA_HEADER_BPS / 1000,
        "redundancy": float("nan"),
        # The path's 30 ms + mean 15 ms jitter, 20 ms frame, 6.5 ms look-ahead, and
        # the lookahead's frames; no jitter buffer of its own.
        "m2e": 30 + 15 + 20 + 6.5 + 20 * lookahead,
        "residual": float("nan"),
    }


def row(cond, rate, mode, runs):
    mean = lambda k: statistics.fmean(r[k] for r in runs)
    scores = [r["pesq"] for r in runs]
    red = mean("redundancy")
    red = "in the codec" if red != red else f"{red:.0f} %"
    return (
        f"| {cond} | {rate // 1000} kbit/s | {mode} | {mean('pesq'):.2f} "
        f"({min(scores):.2f}-{max(scores):.2f}) | {mean('wire'):.1f} kbit/s | {red} "
        f"| {mean('m2e'):.0f} ms |"
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="1,2,3,4,5")
    ap.add_argument("--rates", default="48000,64000")
    ap.add_argument("--no-dred", action="store_true")
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    rates = [int(r) for r in a.rates.split(",")]
    speech_dir = os.path.join(TARGET, "media-speech")
    speech = os.path.join(speech_dir, "speech48.wav")
    if not os.path.exists(speech):
        subprocess.run([os.path.join(ROOT, "benches", "media-speech.sh"), speech_dir], check=True)
    subprocess.run(["cargo", "build", "--release", "--example", "call-quality"], cwd=ROOT, check=True)
    binary = os.path.join(TARGET, "release", "examples", "call-quality")
    work = os.path.join(TARGET, "media-dred")
    harness = os.path.join(work, "media-dred")
    if not a.no_dred:
        subprocess.run(["bash", os.path.join(ROOT, "benches", "media-dred.sh"), "--build-only"],
                       check=True, stdout=subprocess.DEVNULL)
    os.makedirs(work, exist_ok=True)
    rows = []
    for cond, cargs, loss in CONDITIONS:
        for rate in rates:
            fixed = ["--fixed-rate", str(rate)] + cargs
            modes = [
                ("Chorus (shipped: adaptive RS, repairs on media packets)", []),
                ("Chorus, repairs in packets of their own", ["--no-piggyback"]),
                ("libopus LBRR (in-band FEC)", ["--fec", "lbrr"]),
            ]
            for name, extra in modes:
                rows.append(row(cond, rate, name, [call(binary, speech, fixed + extra, s) for s in seeds]))
            plc = []
            for s in seeds:
                fates = os.path.join(work, f"fates-{loss}-{rate}-{s}.txt")
                plc.append(call(binary, speech, fixed + ["--fec", "none", "--fates", fates], s))
            rows.append(row(cond, rate, "PLC only", plc))
            if not a.no_dred:
                best = None
                for lookahead in (1, 2, 5):
                    runs = [
                        dred(harness, speech, os.path.join(work, f"fates-{loss}-{rate}-{s}.txt"),
                             rate, loss, lookahead, work)
                        for s in seeds
                    ]
                    score = statistics.fmean(r["pesq"] for r in runs)
                    if best is None or score > best[0]:
                        best = (score, lookahead, runs)
                rows.append(row(cond, rate, f"libopus DRED 1 s, lookahead {best[1]} (C harness)", best[2]))
            for r in rows[-5:]:
                print(r, file=sys.stderr)
    print()
    print("| condition | send rate | mode | PESQ-WB mean (min-max) | media + repair on the wire "
          "| redundancy | mouth-to-ear |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
