#!/usr/bin/env python3
"""The "shipped session, scored whole" table of docs/media.md.

    python3 benches/call-quality-table.py [--seeds 1,2,3,4,5] [--speech DIR]
                                          [--features media-dnn] [--extra ARGS]

Makes the test speech (benches/media-speech.sh), builds the call-quality example
(release: two chorus_media::session::Sessions over seeded impaired paths, SRTP on,
the whole call scored), runs each condition once per seed and prints a Markdown
table: PESQ-WB (ITU-T P.862.2) mean and range over the seeds, wire and residual
loss, FEC overhead (repair bytes / media bytes, and repair packets / media packets),
RTCP lost, Alice's mean Opus rate, and mouth-to-ear and added delay (mean of the runs' means, and the
largest run's p95). Needs python3 with numpy and pesq, espeak-ng and sox.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The conditions of the media-quality table (docs/media.md): 30 ms delay + 0-30 ms
# uniform jitter each way (the example's defaults).
CONDITIONS = [
    ("clean", ["--loss", "0"]),
    ("10 % random loss", ["--loss", "10%"]),
    ("20 % loss, Gilbert-Elliott bursts of 3", ["--loss", "20%", "--burst", "3"]),
]


def run(binary, speech, args, seed):
    out = subprocess.run(
        [binary, "--input", speech, "--seed", str(seed)] + args,
        check=True, capture_output=True, text=True,
    ).stdout
    line = next(l for l in out.splitlines() if l.startswith("result "))
    kv = dict(f.split("=", 1) for f in line.split()[1:])
    num = lambda v: float(re.match(r"[-0-9.]+", v).group(0)) if re.match(r"[-0-9.]+", v) else float("nan")
    m2e, added = kv["mouth_to_ear_ms"].split("/"), kv["added_delay_ms"].split("/")
    rtcp_lost, rtcp_sent = kv["rtcp_lost"].split("/")
    return {
        "pesq": num(kv["pesq_wb"]),
        "wire": num(kv["wire_loss"]),
        "residual": num(kv["residual_loss"]),
        "bytes": num(kv["fec_overhead_bytes"]),
        "packets": num(kv["fec_overhead_packets"]),
        "m2e_mean": float(m2e[0]), "m2e_p95": float(m2e[1]),
        "add_mean": float(added[0]), "add_p95": float(added[1]),
        "rtcp_lost": int(rtcp_lost), "rtcp_sent": int(rtcp_sent),
        "opus": num(kv.get("opus_bps", "nan")),
        "line": line,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="1,2,3,4,5")
    ap.add_argument("--speech", default=os.path.join(ROOT, "target", "media-speech"))
    ap.add_argument("--features", default="", help="cargo features of the example's build")
    ap.add_argument("--extra", default="", help="more call-quality arguments, every run")
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    if not os.path.exists(os.path.join(a.speech, "speech48.wav")):
        subprocess.run([os.path.join(ROOT, "benches", "media-speech.sh"), a.speech], check=True)
    features = ["--features", a.features] if a.features else []
    subprocess.run(
        ["cargo", "build", "--release", "--example", "call-quality"] + features,
        cwd=ROOT, check=True,
    )
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    binary = os.path.join(target, "release", "examples", "call-quality")
    speech = os.path.join(a.speech, "speech48.wav")
    extra = a.extra.split()
    print(f"seeds {seeds}; speech {speech}; features {a.features or '(default)'}; extra {extra}")
    rows = []
    for cond, cond_args in CONDITIONS:
        rs = [run(binary, speech, cond_args + extra, s) for s in seeds]
        for r in rs:
            print(r["line"], file=sys.stderr)
        mean = lambda k: statistics.fmean(r[k] for r in rs)
        pesq = [r["pesq"] for r in rs]
        rows.append(
            f"| {cond} | {mean('pesq'):.2f} ({min(pesq):.2f}-{max(pesq):.2f}) "
            f"| {mean('wire'):.1f} % | {mean('residual'):.2f} % "
            f"| {mean('bytes'):.0f} % ({mean('packets'):.0f} %) "
            f"| {sum(r['rtcp_lost'] for r in rs)} of {sum(r['rtcp_sent'] for r in rs)} "
            f"| {mean('opus') / 1000:.1f} kbit/s "
            f"| {mean('m2e_mean'):.0f} / {max(r['m2e_p95'] for r in rs):.0f} ms "
            f"| {mean('add_mean'):.0f} / {max(r['add_p95'] for r in rs):.0f} ms |"
        )
    print()
    print("| condition | PESQ-WB mean (min-max) | wire loss | residual loss "
          "| FEC overhead: bytes (packets) | RTCP lost | Opus rate (mean) "
          "| mouth-to-ear mean / p95 | added delay mean / p95 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
