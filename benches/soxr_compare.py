#!/usr/bin/env python3
"""libsoxr (HQ) against voxgate's resampler on the gateway's conversions, in 20 ms chunks.

README
------
    pip install soxr numpy
    python3 benches/soxr_compare.py            # soxr figures only
    python3 benches/soxr_compare.py --cargo    # also runs the Rust bench and prints ours / soxr

What it measures, for 48k->24k, 16k->24k and 24k->16k:
  * speed: a streaming ``soxr.ResampleStream`` (quality "HQ", float32, mono) fed one 20 ms chunk per
    call, as x realtime per core = input samples per CPU-second / input rate. CPU time of this process
    rather than wall time, like the Rust bench, so other load on the machine does not count. Each
    Python call crosses the Python/C boundary (a few microseconds), so the same figure with 1 s chunks,
    where that overhead is negligible, is printed too; and when a C compiler and Debian's libsoxr-dev
    are present (``apt-get install libsoxr-dev``), a small C harness measures libsoxr HQ directly in
    20 ms chunks with no Python in the loop. That C figure is the fair one to compare against.
  * quality: SNR of a 1 kHz sine (amplitude 0.5, 1 s) against the ideal sine at the output rate,
    leaving out the first and last 20 ms (the abrupt start and end ring in any band-limited filter).
    libsoxr removes its own delay; the reference is aligned on the best integer shift, and a phase-fitted
    figure is printed too. The Rust bench prints the same SNR for voxgate (exact reported delay).
With ``--cargo`` it runs ``cargo bench -p voxgate-benches --bench resample`` (summary only), parses its
``RESULT`` lines and prints ours / soxr.
"""

import argparse
import math
import os
import re
import subprocess
import sys
import time

import numpy as np
import soxr

PAIRS = [(48000, 24000), (16000, 24000), (24000, 16000)]
BUDGET_S = 0.7


def signal(rate):
    rng = np.random.default_rng(rate)
    t = np.arange(rate) / rate
    x = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 1800 * t)
    x += rng.uniform(-0.05, 0.05, rate)
    return x.astype(np.float32)


def times_realtime(in_rate, out_rate, chunk):
    """x realtime per core of a streaming HQ resampler fed `chunk` samples per call."""
    x = signal(in_rate)
    chunks = [x[i : i + chunk] for i in range(0, len(x) - chunk + 1, chunk)]
    stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality="HQ")
    for c in chunks[:50]:
        stream.resample_chunk(c)
    done = 0
    wall = time.perf_counter()
    cpu = time.process_time()
    while time.perf_counter() - wall < BUDGET_S:
        for c in chunks:
            stream.resample_chunk(c)
        done += len(chunks) * chunk
    cpu = time.process_time() - cpu
    return done / cpu / in_rate


C_HARNESS = r"""
#include <soxr.h>
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <time.h>

static double cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}
static double wall_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    double in_rate = atof(argv[1]), out_rate = atof(argv[2]), budget = atof(argv[3]);
    size_t chunk = (size_t)(in_rate / 50), len = (size_t)in_rate;
    float *in = malloc(len * sizeof(float)), *out = malloc(2 * len * sizeof(float));
    unsigned seed = 1;
    for (size_t n = 0; n < len; n++) {
        seed = seed * 1103515245u + 12345u;
        in[n] = 0.3f * sinf(2 * 3.14159265f * 220 * n / in_rate)
              + 0.2f * sinf(2 * 3.14159265f * 1800 * n / in_rate)
              + 0.05f * ((seed >> 8) / 8388608.0f - 1.0f);
    }
    soxr_error_t err;
    soxr_io_spec_t io = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I);
    soxr_quality_spec_t q = soxr_quality_spec(SOXR_HQ, 0);
    soxr_runtime_spec_t rt = soxr_runtime_spec(1);
    soxr_t s = soxr_create(in_rate, out_rate, 1, &err, &io, &q, &rt);
    if (err) { fprintf(stderr, "soxr_create: %s\n", err); return 1; }
    size_t idone, odone, pos = 0, done = 0;
    for (int i = 0; i < 100; i++) {
        soxr_process(s, in + pos, chunk, &idone, out, 2 * len, &odone);
        pos = (pos + chunk + chunk > len) ? 0 : pos + chunk;
    }
    double w0 = wall_seconds(), c0 = cpu_seconds();
    while (wall_seconds() - w0 < budget) {
        for (int i = 0; i < 100; i++) {
            soxr_process(s, in + pos, chunk, &idone, out, 2 * len, &odone);
            pos = (pos + chunk + chunk > len) ? 0 : pos + chunk;
            done += chunk;
        }
    }
    double cpu = cpu_seconds() - c0;
    printf("%.1f\n", done / cpu / in_rate);
    soxr_delete(s);
    return 0;
}
"""


def c_times_realtime():
    """{(in, out): x realtime} of libsoxr HQ called from C, or None without cc or libsoxr-dev."""
    import shutil
    import tempfile

    cc = shutil.which("cc")
    if cc is None or not os.path.exists("/usr/include/soxr.h"):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "soxr_bench.c")
        exe = os.path.join(tmp, "soxr_bench")
        with open(src, "w") as f:
            f.write(C_HARNESS)
        build = subprocess.run([cc, "-O2", src, "-o", exe, "-lsoxr", "-lm"], capture_output=True, text=True)
        if build.returncode != 0:
            print("C harness did not build:", build.stderr.strip(), file=sys.stderr)
            return None
        results = {}
        for in_rate, out_rate in PAIRS:
            run = subprocess.run([exe, str(in_rate), str(out_rate), str(BUDGET_S)], capture_output=True, text=True, check=True)
            results[(in_rate, out_rate)] = float(run.stdout.strip())
        return results


def sine_snr(in_rate, out_rate):
    """(best integer-shift SNR, phase-fitted SNR, shift) of a 1 kHz sine through soxr HQ in 20 ms chunks."""
    freq = 1000.0
    n = np.arange(in_rate)
    x = (0.5 * np.sin(2 * np.pi * freq * n / in_rate)).astype(np.float32)
    stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality="HQ")
    chunk = in_rate // 50
    parts = [stream.resample_chunk(x[i : i + chunk]) for i in range(0, len(x), chunk)]
    parts.append(stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
    y = np.concatenate(parts).astype(np.float64)
    edge = out_rate // 50
    w = 2 * np.pi * freq / out_rate
    best = (-math.inf, 0)
    for shift in range(-64, 65):
        m = np.arange(len(y))
        ideal = 0.5 * np.sin(w * (m - shift))
        body = slice(edge, len(y) - edge)
        noise = np.sum((y[body] - ideal[body]) ** 2)
        snr = 10 * math.log10(np.sum(ideal[body] ** 2) / noise)
        if snr > best[0]:
            best = (snr, shift)
    body = y[edge : len(y) - edge]
    m = np.arange(edge, len(y) - edge)
    basis = np.stack([np.sin(w * m), np.cos(w * m)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, body, rcond=None)
    fit = basis @ coef
    fitted = 10 * math.log10(np.sum(fit**2) / np.sum((body - fit) ** 2))
    return best[0], fitted, best[1]


def cargo_results():
    """{(in, out): x realtime} from the Rust bench's summary lines."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # A filter that matches no criterion benchmark: only the summary (the "x realtime" lines) runs.
    cmd = ["cargo", "bench", "-p", "voxgate-benches", "--bench", "resample", "--", "summary-only"]
    out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=True).stdout
    results = {}
    for line in out.splitlines():
        m = re.match(r"RESULT (\d+)->(\d+) voxgate (\d+) x realtime.*?snr ([\d.]+) dB", line)
        if m:
            results[(int(m[1]), int(m[2]))] = (float(m[3]), float(m[4]))
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cargo", action="store_true", help="also run the Rust bench and print ours / soxr")
    args = parser.parse_args()

    print(f"soxr {soxr.__version__} (libsoxr {soxr.__libsoxr_version__}), quality HQ, float32 mono")
    soxr_speed = {}
    for in_rate, out_rate in PAIRS:
        x20 = times_realtime(in_rate, out_rate, in_rate // 50)
        x1s = times_realtime(in_rate, out_rate, in_rate)
        snr, fitted, shift = sine_snr(in_rate, out_rate)
        soxr_speed[(in_rate, out_rate)] = x20
        print(
            f"soxr {in_rate}->{out_rate}: {x20:.0f} x realtime (20 ms chunks), {x1s:.0f} x realtime (1 s chunks); "
            f"1 kHz SNR {snr:.1f} dB (shift {shift}), phase-fitted {fitted:.1f} dB"
        )
    c_speed = c_times_realtime()
    if c_speed:
        for (in_rate, out_rate), x in c_speed.items():
            print(f"libsoxr from C {in_rate}->{out_rate}: {x:.0f} x realtime (20 ms chunks, no Python)")
    else:
        print("libsoxr from C: skipped (needs cc and libsoxr-dev)")
    if args.cargo:
        ours = cargo_results()
        if not ours:
            sys.exit("no RESULT lines from cargo bench")
        for pair in PAIRS:
            x, snr = ours[pair]
            line = (
                f"voxgate {pair[0]}->{pair[1]}: {x:.0f} x realtime, 1 kHz SNR {snr:.1f} dB; "
                f"ours / soxr-python (20 ms) = {x / soxr_speed[pair]:.2f}"
            )
            if c_speed:
                line += f", ours / soxr-C (20 ms) = {x / c_speed[pair]:.2f}"
            print(line)


if __name__ == "__main__":
    main()
