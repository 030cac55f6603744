"""Decoded samples per second through the pure serial path (bytes → frames → points).

Run from the repository root: ``python benchmarks/bench_serial.py``. Prints a table and writes
``benchmarks/results/serial.json``.
"""

from __future__ import annotations

import json
import math
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from firmware_bridge.framing import Frame, FrameDecoder, encode_frame  # noqa: E402
from firmware_bridge.messages import Channel, Data, Hello  # noqa: E402
from firmware_bridge.stream import SampleStream  # noqa: E402

CHANNELS = 8
TOTAL_SAMPLES = 200_000
CHUNK = 4096  # bytes per read, like a busy UART buffer


def make_wire(samples_per_frame: int) -> bytes:
    hello = Hello(tuple(Channel(f"ch{c}") for c in range(CHANNELS)), 1000.0)
    parts = [encode_frame(_frame(0, 0, hello))]
    n_frames = TOTAL_SAMPLES // samples_per_frame
    for i in range(n_frames):
        rows = [
            tuple(math.sin(0.01 * (i * samples_per_frame + s) + c) for c in range(CHANNELS))
            for s in range(samples_per_frame)
        ]
        data = Data.from_rows(rows, period_us=1000 if samples_per_frame > 1 else 0)
        parts.append(encode_frame(_frame(i + 1, i * samples_per_frame, data)))
    return b"".join(parts)


def _frame(seq: int, ts: int, message: Hello | Data) -> Frame:
    return Frame(1, seq & 0xFFFF, ts & 0xFFFFFFFF, message)


def bench(samples_per_frame: int) -> dict[str, float]:
    wire = make_wire(samples_per_frame)
    chunks = [wire[i : i + CHUNK] for i in range(0, len(wire), CHUNK)]
    # frames only
    decoder = FrameDecoder()
    t0 = time.perf_counter()
    frames = sum(len(decoder.feed(c)) for c in chunks)
    t_frames = time.perf_counter() - t0
    # full path: bytes -> points
    stream = SampleStream()
    t0 = time.perf_counter()
    points = sum(len(stream.feed(c, now=1_700_000_000.0)) for c in chunks)
    t_points = time.perf_counter() - t0
    assert points == TOTAL_SAMPLES, points
    return {
        "samples_per_frame": samples_per_frame,
        "channels": CHANNELS,
        "samples": TOTAL_SAMPLES,
        "frames": frames,
        "wire_bytes": len(wire),
        "bytes_per_sample": round(len(wire) / TOTAL_SAMPLES, 2),
        "frames_per_s": round(frames / t_frames),
        "decode_samples_per_s": round(TOTAL_SAMPLES / t_frames),
        "points_per_s": round(TOTAL_SAMPLES / t_points),
    }


def main() -> int:
    results = [bench(10), bench(1)]
    print(f"{'samples/frame':>13} {'bytes/sample':>12} {'frames/s':>10} "
          f"{'decoded samples/s':>18} {'points/s':>10}")  # fmt: skip
    for r in results:
        print(f"{r['samples_per_frame']:>13} {r['bytes_per_sample']:>12} {r['frames_per_s']:>10}"
              f" {r['decode_samples_per_s']:>18} {r['points_per_s']:>10}")  # fmt: skip
    out = ROOT / "benchmarks" / "results" / "serial.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"python": platform.python_version(), "machine": platform.machine()}
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print(f"saved {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
