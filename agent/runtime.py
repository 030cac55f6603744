"""The live agent: MQTT in, detection, store-and-forward out, control plane, shutdown.

Threads and who owns what:

* paho's network thread (inside :class:`~agent.transports.mqtt.MqttTransport`) only
  appends ``(topic, payload, receive time)`` to a bounded deque (``mqtt.queue_size``);
  when it is full the *oldest* message is dropped and counted (``queue.dropped``);
  control messages go to a separate small queue, so a data burst cannot starve them;
* one reader thread per ``serial`` entry (:class:`~agent.sources.serial.SerialSource`)
  decodes its port and appends the decoded points to the same bounded deque;
* the detection worker (this module) is the only thread touching the engine: it parses,
  runs the cascade, answers commands, applies configs, writes stats and checkpoints; a
  backlog of queued messages is scored in bursts, one engine call each, with commands
  between bursts (``LiveAgent._drain`` in :mod:`agent.live`);
* the outbox thread (:class:`~agent.publisher.Publisher`) drains the SQLite store.

With ``--input FILE`` (``-`` = stdin) the agent reads JSON-lines points
``{"stream", "ts", "values"}`` instead of subscribing to sensor topics. Without
``mqtt.enabled`` (and without ``serial``) that is a plain offline run (:func:`run_input`:
alerts to the configured sinks, stats on stderr); otherwise the live agent runs as usual
(status, birth, stats, store-and-forward, control plane) fed from the file too, and shuts
down gracefully at its end. With ``serial`` entries and ``mqtt.enabled: false`` the live
agent runs without a broker: alerts go to the configured sinks, stats to stderr as JSON
lines ``{"stats": ...}`` every ``agent.stats_interval_s`` and once more at shutdown.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from agent.config import MAX_CONFIG_BYTES, AgentConfig, config_from_dict, load_config
from agent.control import merge
from agent.engine import Engine
from agent.errors import ConfigError, InputError
from agent.onnx_scorer import model_from_config
from agent.payloads import parse_payload
from agent.sinks import AlertSink, JsonlSink
from agent.types import Point

log = logging.getLogger(__name__)


def read_doc(path: str | Path) -> dict[str, Any]:
    """The raw YAML mapping of a config file (validated separately)."""
    load_config(path)  # raises ConfigError naming file and key
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    return dict(data)


def load_effective(path: str | Path) -> tuple[dict[str, Any], dict[str, Any], AgentConfig]:
    """Base document, persisted ``config/desired`` overlay and the config they make."""
    base = read_doc(path)
    cfg = config_from_dict(base, str(path))
    overlay: dict[str, Any] = {}
    if cfg.control.desired_path:
        p = cfg.resolve_path(cfg.control.desired_path)
        if p.exists():
            try:
                if p.stat().st_size > MAX_CONFIG_BYTES:
                    raise ValueError(f"larger than {MAX_CONFIG_BYTES} bytes")
                overlay = json.loads(p.read_text(encoding="utf-8"))
                cfg = config_from_dict(merge(base, overlay), str(path))
                log.info("applied persisted config/desired version %s", cfg.version)
            except (OSError, ValueError, ConfigError) as exc:
                log.warning("ignoring persisted desired config %s: %s", p, exc)
                overlay = {}
    return base, overlay, cfg


def make_sinks(cfg: AgentConfig) -> list[AlertSink]:
    return [JsonlSink(cfg.resolve_path(cfg.sinks.jsonl) if cfg.sinks.jsonl != "-" else "-")
            ] if cfg.sinks.jsonl else []


def run_input(cfg: AgentConfig, input_path: str) -> int:
    """Detect on JSON-lines points ``{"stream", "ts", "values"}``; print stats on stderr."""
    model = model_from_config(cfg.detectors.onnx, cfg.resolve_path)
    sinks = make_sinks(cfg)
    engine = Engine(cfg, model=model, sinks=sinks)
    ckpt = cfg.resolve_path(cfg.checkpoint.path) if cfg.checkpoint.path else None
    if ckpt is not None:
        engine.restore(ckpt)
    try:
        fh = sys.stdin if input_path == "-" else open(input_path, encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        raise InputError(f"--input {input_path}: {exc}") from exc
    try:
        for line in fh:
            if not line.strip():
                continue
            parsed = parse_payload(line.encode(), stream=None, now=time.time(), fmt="json")
            for reason, detail in parsed.rejects:
                engine.rejects.reject(reason, detail)
            engine.process_batch(parsed.points)  # (= process() point by point)
    finally:
        if fh is not sys.stdin:
            fh.close()
        for s in sinks:
            s.close()
    if ckpt is not None:
        engine.save(ckpt)
    print(json.dumps({"stats": engine.stats()}, default=str), file=sys.stderr)
    return 0


INPUT_TOPIC = ""  # pseudo-topic of points read from --input
SERIAL_TOPIC = "\x00serial"  # pseudo-topic of points decoded by a serial source


class Ingest:
    """The bounded hand-off between the network thread and the worker (drop-oldest)."""

    def __init__(self, capacity: int) -> None:
        self.data: deque[tuple[str, bytes | Point, float]] = deque(maxlen=capacity)
        self.control: deque[Callable[[], None]] = deque(maxlen=1000)
        self.dropped = 0
        self.control_dropped = 0
        self.accepting = True
        self.wake = threading.Event()
        self._lock = threading.Lock()  # several producers: paho, serial readers, --input

    def put_data(self, topic: str, payload: bytes | Point) -> None:
        if not self.accepting:
            return
        with self._lock:
            if len(self.data) == self.data.maxlen:
                self.dropped += 1
            self.data.append((topic, payload, time.monotonic()))
        self.wake.set()

    def put_point(self, point: Point) -> None:
        """A serial source's ``on_point``: same queue, same drop-oldest policy."""
        self.put_data(SERIAL_TOPIC, point)

    def put_control(self, fn: Callable[[], None]) -> None:
        if len(self.control) == self.control.maxlen:
            self.control_dropped += 1
        self.control.append(fn)
        self.wake.set()


def _feed_lines(ingest: Ingest, input_path: str, stop: threading.Event) -> None:
    """Live mode with ``--input``: JSON lines instead of MQTT subscriptions, blocking
    (not dropping) while the queue is full; at the end of the input the agent stops."""
    try:
        fh = sys.stdin if input_path == "-" else open(input_path, encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        log.error("--input %s: %s", input_path, exc)
        stop.set()
        return
    with fh:
        for line in fh:
            if stop.is_set():
                return
            while len(ingest.data) >= (ingest.data.maxlen or 1) - 1 and not stop.is_set():
                time.sleep(0.005)
            if line.strip():
                ingest.put_data(INPUT_TOPIC, line.encode())
    log.info("end of --input: shutting down")
    stop.set()


def run_agent(config_path: str, input_path: str | None = None) -> int:
    """``edge-agent run``: the live agent (MQTT) or, with ``input_path``, JSON lines."""
    base, overlay, cfg = load_effective(config_path)
    logging.getLogger().setLevel(cfg.agent.log_level.upper())
    if input_path is not None and not cfg.mqtt.enabled and not cfg.serial:
        return run_input(cfg, input_path)
    if not cfg.mqtt.enabled and not cfg.serial and input_path is None:
        raise ConfigError("mqtt.enabled, serial",
                          "nothing to read: set mqtt.enabled: true (with mqtt.ingest topics), "
                          "add a serial port (serial: [{port: /dev/ttyUSB0, stream: ID}]), "
                          "or give --input FILE", config_path)
    from agent.live import LiveAgent

    agent = LiveAgent(config_path, base, overlay, cfg, boot=uuid.uuid4().hex[:12])
    stop = threading.Event()

    def _on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %d: shutting down", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    agent.start()
    if input_path is not None:
        threading.Thread(target=_feed_lines, args=(agent.ingest, input_path, stop),
                         name="input", daemon=True).start()
    try:
        while not stop.wait(0.5):
            if agent.failed is not None:
                log.error("worker failed: %s", agent.failed)
                agent.shutdown()
                return 1
    finally:
        if agent.failed is None:
            agent.shutdown()
    return 0
