"""``edge-bridge``: serial device → MQTT batches, and a simulated device on a pty.

Exit codes: 0 ok, 1 runtime error, 2 usage error. Logs go to stderr.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import queue
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import BinaryIO

from agent._version import __version__
from agent.types import Point
from firmware_bridge.errors import FramingError
from firmware_bridge.publisher import Batcher, MqttPublisher
from firmware_bridge.serial_port import PortReader, PortSettings
from firmware_bridge.simulator import DeviceSimulator, PtyDevice, read_csv, synthetic_rows
from firmware_bridge.stream import SampleStream

log = logging.getLogger("edge-bridge")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-bridge", description="Serial sensor frames to MQTT batches."
    )
    parser.add_argument("--version", action="version", version=f"edge-bridge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="read a serial port and publish batches to MQTT")
    run.add_argument("--port", required=True, help="serial device, e.g. /dev/ttyUSB0")
    run.add_argument("--baud", type=int, default=115200)
    run.add_argument("--parity", choices=["N", "E", "O", "M", "S"], default="N")
    run.add_argument("--mode", choices=["binary", "ascii", "auto"], default="binary")
    run.add_argument("--stream", help="stream id (default dev{device_id})")
    run.add_argument("--channels", default="", help="comma-separated names for ASCII CSV lines")
    run.add_argument("--mqtt-host", required=True)
    run.add_argument("--mqtt-port", type=int, default=1883)
    run.add_argument("--topic", required=True, help="MQTT topic; '{stream}' is replaced")
    run.add_argument("--format", choices=["binary", "json"], default="binary")
    run.add_argument("--batch-size", type=int, default=100, help="max samples per batch")
    run.add_argument("--batch-ms", type=int, default=1000, help="max batch age in ms")
    run.add_argument("--duration", type=float, default=0.0, help="stop after S seconds (0: never)")

    sim = sub.add_parser("simulate", help="a simulated device on a pseudo-terminal")
    sim.add_argument("--pty", action="store_true", help="create a pty, print its path first")
    sim.add_argument("--link", help="also make a symlink to the pty at this path")
    sim.add_argument("--rate", type=float, default=10.0, help="samples per second")
    sim.add_argument("--channels", type=int, default=4, help="synthetic channels")
    sim.add_argument("--csv", help="stream the numeric columns of this CSV file instead")
    sim.add_argument("--count", type=int, default=0, help="stop after N samples (0: never)")
    sim.add_argument("--corrupt-rate", type=float, default=0.0, help="P(bit flip) per frame")
    sim.add_argument("--samples-per-frame", type=int, default=1)
    sim.add_argument("--device-id", type=int, default=1)
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--hello-every", type=float, default=1.0, help="seconds between HELLOs")
    sim.add_argument("--linger", type=float, default=1.0, help="seconds to keep the pty at end")
    return parser


class _Stop:
    """Set by SIGINT/SIGTERM (in the main thread only)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.event.set()


def _cmd_run(args: argparse.Namespace) -> int:
    if args.batch_size < 1 or args.batch_ms < 1:
        raise ValueError("--batch-size and --batch-ms must be >= 1")
    settings = PortSettings(args.port, baudrate=args.baud, parity=args.parity)
    channels = [c for c in args.channels.split(",") if c]
    decoder = SampleStream(args.mode, args.stream, channels)
    points: queue.Queue[Point] = queue.Queue(maxsize=100_000)

    def on_bytes(data: bytes) -> None:
        for point in decoder.feed(data, time.time()):
            points.put(point)

    reader = PortReader(settings, on_bytes, on_reopen=decoder.reset)
    batcher = Batcher(args.batch_size, args.batch_ms / 1000.0)
    publisher = MqttPublisher(args.mqtt_host, args.mqtt_port, args.topic, args.format)
    stop = _Stop()
    end = time.monotonic() + args.duration if args.duration > 0 else float("inf")
    reader.start()
    log.info("bridging %s -> mqtt://%s:%d/%s", args.port, args.mqtt_host, args.mqtt_port,
             args.topic)  # fmt: skip
    try:
        while not stop.event.is_set() and time.monotonic() < end:
            try:
                point = points.get(timeout=0.02)
            except queue.Empty:
                pass
            else:
                for batch in batcher.add(point, time.monotonic()):
                    publisher.publish(batch)
            for batch in batcher.due(time.monotonic()):
                publisher.publish(batch)
    finally:
        reader.stop()
        while not points.empty():
            for batch in batcher.add(points.get_nowait(), time.monotonic()):
                publisher.publish(batch)
        for batch in batcher.flush():
            publisher.publish(batch)
        publisher.close()
        log.info("stopped: %d batches published, stats %s", publisher.published,
                 {**decoder.stats(), **reader.stats()})  # fmt: skip
    return 0


def _rows(args: argparse.Namespace) -> tuple[tuple[str, ...], Iterator[tuple[float, ...]]]:
    if args.csv:
        names, rows = read_csv(args.csv)
        return names, iter(rows)
    if not 1 <= args.channels <= 64:
        raise ValueError(f"--channels must be 1..64, got {args.channels}")
    names = tuple(f"ch{i}" for i in range(args.channels))
    return names, synthetic_rows(args.channels, args.rate, args.seed)


def _cmd_simulate(args: argparse.Namespace) -> int:
    names, rows = _rows(args)
    sim = DeviceSimulator(
        device_id=args.device_id,
        channels=names,
        rate_hz=args.rate,
        samples_per_frame=args.samples_per_frame,
        corrupt_rate=args.corrupt_rate,
        seed=args.seed,
    )
    if args.count > 0:
        rows = itertools.islice(rows, args.count)
    device: PtyDevice | None = None
    out: BinaryIO | None = None
    if args.pty:
        device = PtyDevice(args.link)
        print(device.path, flush=True)
    else:
        out = sys.stdout.buffer

    def write(data: bytes) -> None:
        if device is not None:
            device.write(data)
        elif out is not None:
            out.write(data)
            out.flush()

    stop = _Stop()
    frame_period = args.samples_per_frame / args.rate
    start = time.monotonic()
    next_hello = start
    frames = 0
    try:
        while not stop.event.is_set():
            chunk = list(itertools.islice(rows, args.samples_per_frame))
            if not chunk:
                break
            if time.monotonic() >= next_hello:
                write(sim.hello())
                next_hello += args.hello_every
            write(sim.data(chunk))
            frames += 1
            stop.event.wait(max(0.0, start + frames * frame_period - time.monotonic()))
        if device is not None:
            stop.event.wait(args.linger)
    finally:
        if device is not None:
            device.close()
    log.info("sent %d samples in %d frames (%d corrupted)", sim.samples_sent, frames,
             sim.corrupted)  # fmt: skip
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``edge-bridge``; returns the exit code."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "run":
            return _cmd_run(args)
        return _cmd_simulate(args)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    except (FramingError, OSError) as exc:
        log.error("%s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
