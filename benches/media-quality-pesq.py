#!/usr/bin/env python3
"""PESQ (ITU-T P.862.2 wide-band) score of the media-quality example's output.

    python3 benches/media-quality-pesq.py ref.wav deg.wav

The media-quality example runs it itself on the input and its output (see
docs/media.md); benches/media-speech.sh makes the test speech.

Needs `pip install numpy pesq`. Both files are 16-bit PCM mono WAV; they are
resampled to 16 kHz (windowed-sinc low-pass, then decimation) as P.862.2 requires.
PESQ aligns the two signals itself, so the codec and jitter-buffer delay do not matter.
"""
import sys
import wave

import numpy as np
from pesq import pesq


def read(path):
    with wave.open(path, "rb") as w:
        if w.getsampwidth() != 2:
            sys.exit(f"{path}: only 16-bit PCM is read")
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)
        channels = w.getnchannels()
        return data[::channels], w.getframerate()


def to_16k(x, rate):
    if rate == 16000:
        return x
    if rate % 16000 != 0:
        sys.exit(f"sample rate {rate} is not a multiple of 16 kHz")
    factor = rate // 16000
    taps = 64 * factor + 1
    n = np.arange(taps) - (taps - 1) / 2
    cutoff = 0.9 / factor
    h = cutoff * np.sinc(cutoff * n) * np.blackman(taps)
    return np.convolve(x, h / h.sum(), mode="same")[::factor]


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    ref, ref_rate = read(sys.argv[1])
    deg, deg_rate = read(sys.argv[2])
    ref, deg = to_16k(ref, ref_rate), to_16k(deg, deg_rate)
    n = min(len(ref), len(deg))
    score = pesq(16000, ref[:n], deg[:n], "wb")
    print(f"PESQ-WB               {score:.2f} (ITU-T P.862.2 MOS-LQO)")


if __name__ == "__main__":
    main()
