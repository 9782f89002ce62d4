#!/usr/bin/env python3
"""The chorus-media quality table of docs/performance.md and docs/media.md.

    python3 benches/media-quality-table.py [--seeds 1,2,3,4,5] [--speech DIR]
                                           [--features media-dnn]

Makes the test speech (benches/media-speech.sh), builds the media-quality example
(release), runs every condition x mode below once per seed and prints a Markdown
table: PESQ-WB (ITU-T P.862.2) mean and range over the seeds, residual loss, FEC
overhead (of media bytes, and repair packets per media packet) and the added delay
(jitter buffer + FEC wait: mean, and the largest per-run p95). Needs python3 with
numpy and pesq (`pip install numpy pesq`), espeak-ng and sox.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONDITIONS = [
    ("clean, 32 kbit/s", ["--loss", "0"]),
    ("10 % random loss", ["--loss", "10%"]),
    ("20 % loss, Gilbert-Elliott bursts of 3", ["--loss", "20%", "--burst", "3"]),
]

MODES = {
    "clean, 32 kbit/s": [
        ("codec alone (no jitter)", ["--jitter", "0ms", "--plc-only"]),
        ("controller", []),
    ],
    "10 % random loss": [
        ("Opus PLC only", ["--plc-only"]),
        ("Opus LBRR only", ["--fec", "off", "--opus-fec", "on"]),
        ("RS controller (default)", []),
        ("RS controller + LBRR", ["--opus-fec", "on"]),
        ("RS controller, 1 % residual goal", ["--residual", "1%"]),
    ],
    "20 % loss, Gilbert-Elliott bursts of 3": [
        ("Opus PLC only", ["--plc-only"]),
        ("Opus LBRR only", ["--fec", "off", "--opus-fec", "on"]),
        ("RS controller (default)", []),
        ("RS controller, 24 kbit/s media", ["--bitrate", "24000"]),
        ("RS controller, 1 % residual goal", ["--residual", "1%"]),
        ("RS controller, first tier only",
         ["--heavy-max-fec-delay", "50ms", "--heavy-max-overhead", "1"]),
    ],
}


def field(pattern, text):
    m = re.search(pattern, text)
    return float(m.group(1)) if m else float("nan")


def run(binary, speech, args, seed):
    out = subprocess.run(
        [binary, "--input", speech, "--seed", str(seed)] + args,
        check=True, capture_output=True, text=True,
    ).stdout
    return {
        "pesq": field(r"PESQ-WB\s+([0-9.]+)", out),
        "residual": field(r"residual loss\s+([0-9.]+)", out),
        "overhead": field(r"FEC overhead\s+([0-9.]+)", out),
        "repair_pkts": field(r"repair packets, ([0-9.]+) %", out),
        "mean": field(r"added delay\s+mean ([0-9.]+)", out),
        "p95": field(r"p95 ([0-9.]+)", out),
        "wire": field(r"lost on the wire\s+\d+ \(([0-9.]+)", out),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="1,2,3,4,5")
    ap.add_argument("--speech", default=os.path.join(ROOT, "target", "media-speech"))
    ap.add_argument("--features", default="", help="cargo features of the example's build")
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    subprocess.run([os.path.join(ROOT, "benches", "media-speech.sh"), a.speech], check=True)
    features = ["--features", a.features] if a.features else []
    subprocess.run(
        ["cargo", "build", "--release", "--example", "media-quality"] + features,
        cwd=ROOT, check=True,
    )
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    binary = os.path.join(target, "release", "examples", "media-quality")
    speech = os.path.join(a.speech, "speech48.wav")
    print(f"seeds {seeds}; speech {speech}; features {a.features or '(default)'}")
    print()
    print("| condition | mode | PESQ-WB mean (min-max) | wire loss | residual loss "
          "| FEC overhead: bytes (packets) | added delay mean / p95 |")
    print("|---|---|---|---|---|---|---|")
    for cond, cond_args in CONDITIONS:
        for mode, mode_args in MODES[cond]:
            rs = [run(binary, speech, cond_args + mode_args, s) for s in seeds]
            mean = lambda k: statistics.fmean(r[k] for r in rs)
            pesq = [r["pesq"] for r in rs]
            print(
                f"| {cond} | {mode} | {mean('pesq'):.2f} ({min(pesq):.2f}-{max(pesq):.2f}) "
                f"| {mean('wire'):.1f} % | {mean('residual'):.2f} % "
                f"| {mean('overhead'):.0f} % ({mean('repair_pkts'):.0f} %) "
                f"| {mean('mean'):.0f} / {max(r['p95'] for r in rs):.0f} ms |"
            )
            sys.stdout.flush()


if __name__ == "__main__":
    main()
