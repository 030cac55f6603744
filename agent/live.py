"""The live agent object: wires transport, sources, ingest queue, engine, outbox and control.

See :mod:`agent.runtime` for the threading model. Every method named ``cmd_*`` or
``_apply*`` runs on the detection worker thread (the only thread touching the engine).

The transport is :class:`~agent.transports.mqtt.MqttTransport` with ``mqtt.enabled``,
else :class:`~agent.transports.base.NullTransport` (serial sources only: alerts go to the
configured sinks, stats to stderr); tests pass a
:class:`~agent.transports.memory.MemoryTransport` to drive the runtime without a broker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from agent.config import AgentConfig
from agent.control import (
    CommandError,
    DesiredOutcome,
    dispatch,
    evaluate_desired,
    parse_command,
)
from agent.control_auth import ControlGuard
from agent.engine import Engine
from agent.errors import AgentError
from agent.events import live as event_live
from agent.freshness import CHECK_S, Freshness
from agent.keyfiles import audit_secrets
from agent.model_updates import ModelUpdater
from agent.onnx_scorer import OnnxModel, model_from_config
from agent.payloads import parse_payload
from agent.publisher import LatencyWindow, Publisher, StoreSink
from agent.reports import birth_payload, stats_payload, status_payload
from agent.runtime import INPUT_TOPIC, Ingest, load_effective, make_sinks
from agent.sinks import AlertSink
from agent.sources.serial import SerialSource
from agent.store import Store
from agent.topics import Route, Router, TopicTree
from agent.transports.base import NullTransport, Transport, Will
from agent.transports.mqtt import MqttTransport
from agent.types import Decision, Point

log = logging.getLogger("agent.live")

_INPUT_ROUTE = Route("#", None, "json")
_DETECTION = ("streams", "detectors", "escalation", "alerts")
# A burst (several queued messages scored in one engine call, LiveAgent._drain) takes at
# most this many messages, and no more once it holds this many points (a message is never
# split). Control commands and config swaps wait for at most one burst, and its first
# message for the rest of it to be scored: ~0.1 s at 512 points on the benchmark's cascade
# (~200 us/point); the CPU saved per point no longer grows beyond ~64 1-point messages.
BURST_MAX_MESSAGES = 128
BURST_MAX_POINTS = 512


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), default=str).encode()


_freeze_after_full_gc = False


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    global _freeze_after_full_gc
    if phase == "stop" and info["generation"] == 2 and _freeze_after_full_gc:
        _freeze_after_full_gc = False
        gc.freeze()


def freeze_heap() -> None:
    """Exempt every object alive now from the cyclic GC (at start, once the agent is built).

    The engine, its detectors and models, the config and the imported modules are tens of
    thousands of long-lived objects; otherwise every full (generation 2) collection walks
    all of them on whichever thread triggers it, a pause of tens of milliseconds (93 ms
    measured on the benchmark's agent on a loaded 2-core host) that every message queued
    behind it waits out. Later full collections walk only younger objects. No collection
    is forced first: the few unreachable objects of start-up (56 on the benchmark's
    agent) stay frozen, once. Frozen objects are still freed by reference counting; only
    reference cycles among them would outlive their use: see :func:`refreeze_heap`.
    """
    global _freeze_after_full_gc
    if _on_gc not in gc.callbacks:
        gc.callbacks.append(_on_gc)
    _freeze_after_full_gc = False
    gc.freeze()


def refreeze_heap() -> None:
    """After the worker replaced the engine or the model: unfreeze, so that the next full
    collection (run by the interpreter when it would anyway) frees the replaced objects,
    and freeze what survives it. Memory stays bounded; no collection is forced here, so
    garbage of others (an unclosed socket...) is finalised when it would have been."""
    global _freeze_after_full_gc
    if _on_gc not in gc.callbacks:
        gc.callbacks.append(_on_gc)
    gc.unfreeze()
    _freeze_after_full_gc = True


def unfreeze_heap() -> None:
    """Undo :func:`freeze_heap` (at shutdown: an embedding process gets its GC back)."""
    global _freeze_after_full_gc
    _freeze_after_full_gc = False
    gc.unfreeze()


class LiveAgent:
    def __init__(self, config_path: str, base: dict[str, Any], overlay: dict[str, Any],
                 cfg: AgentConfig, boot: str, transport: Transport | None = None) -> None:
        self.config_path = config_path
        self.base, self.overlay, self.cfg = base, overlay, cfg
        self.started = time.monotonic()
        m = cfg.mqtt
        self.upstream = m.enabled or transport is not None  # alerts/stats go to a broker
        self.tree = TopicTree(m.prefix, m.site, m.gateway or cfg.agent.id)
        store_path = cfg.resolve_path(cfg.store.path) if cfg.store.path else ":memory:"
        if cfg.store.path is None and self.upstream:
            log.warning("store.path is not set: the outbox is in memory and lost on restart")
        self.store = Store(store_path, max_bytes=cfg.store.max_bytes,
                           max_age_s=cfg.store.max_age_s, boot=boot,
                           memory_max_bytes=cfg.store.memory_max_bytes,
                           retry_s=cfg.store.retry_s)
        self.ckpt_health: dict[str, Any] = {"ok": True, "error": None, "since": None,
                                            "failures": 0}
        self.session = self.store.next_session()
        self.ingest = Ingest(m.queue_size)
        self.latency = LatencyWindow()
        self.messages_in = 0
        self.ts_defaulted = 0
        self.bursts = 0  # worker calls that scored two or more queued messages at once
        self.burst_max = 0  # most messages taken in one burst
        self.failed: BaseException | None = None
        self.on_decision: Callable[[Decision], None] | None = None  # demo/plot hook
        self._stop = threading.Event()
        self.freshness = Freshness(time.monotonic())  # stale/fresh events (agent/freshness.py)
        self._fresh_pending = False
        self._router = self._make_router(cfg)
        audit_secrets(cfg, config_path)
        self.guard = ControlGuard.from_config(cfg.control, cfg.resolve_path)  # signed control
        will = Will(self.tree.status, _dumps(status_payload("offline", self.session, None,
                                                            "lwt")))
        if transport is None:
            transport = MqttTransport(
                m, m.client_id or cfg.agent.id, will,
                on_message=self._on_message, subscriptions=self._subscriptions,
                on_connected=self._on_connected, resolve_path=lambda s: str(cfg.resolve_path(s)),
            ) if m.enabled else NullTransport()
        else:
            transport.bind(will, self._on_message, self._subscriptions, self._on_connected)
        self.transport: Transport = transport
        self.publisher = Publisher(self.store, self.transport, m.inflight)
        self.transport.on_ack = self.publisher.on_ack
        self.store_sink = StoreSink(self.store, self.publisher, self.tree.alert,
                                    lambda: self.transport.connected)
        # model updates (docs/model-update.md): the last active model wins over the configured
        self.models = ModelUpdater(self) if cfg.models.dir else None
        self.model = (self.models.startup_model() if self.models else None) or model_from_config(
            cfg.detectors.onnx, cfg.resolve_path)
        self.engine = self._make_engine(cfg, self.model)
        self._ckpt = cfg.resolve_path(cfg.checkpoint.path) if cfg.checkpoint.path else None
        if self._ckpt is not None:
            self.engine.restore(self._ckpt)
        self.events = event_live.for_agent(self)  # event/log sources (agent/events/live.py)
        self._birth = b""
        self._refresh_birth()
        self.metrics: Any = None
        if cfg.metrics.enabled:
            from agent.metrics import MetricsServer

            self.metrics = MetricsServer(cfg.metrics.host, cfg.metrics.port)
        # one reader thread per port; on_point only enqueues (drop-oldest, counted)
        self.serial = [SerialSource(sc, self.ingest.put_point) for sc in cfg.serial]
        self._worker = threading.Thread(target=self._work, name="detect", daemon=True)
        self._timers = threading.Thread(target=self._tick, name="timers", daemon=True)

    # ----------------------------------------------------------------- wiring
    def _make_engine(self, cfg: AgentConfig, model: OnnxModel | None) -> Engine:
        upstream: list[AlertSink] = [self.store_sink] if self.upstream else []
        return Engine(cfg, model=model, sinks=[*upstream, *make_sinks(cfg)])

    @staticmethod
    def _make_router(cfg: AgentConfig) -> Router:
        return Router([Route(i.topic, i.stream, i.format) for i in cfg.mqtt.ingest])

    def _subscriptions(self) -> list[tuple[str, int]]:
        subs = [(r.topic, self.cfg.mqtt.ingest_qos) for r in self._router.routes]
        if self.events is not None:
            subs += self.events.subscriptions(self.cfg.mqtt.ingest_qos)
        if self.cfg.control.enabled:
            subs += [(self.tree.config_desired, 1), (self.tree.commands, 1)]
        if self.models is not None:
            subs += self.models.subscriptions()
        return subs

    def start(self) -> None:
        freeze_heap()
        self._worker.start()
        self._timers.start()
        self.publisher.start()
        if self.models is not None:
            self.models.start()
        self.transport.start()
        for src in self.serial:
            c = src.config
            log.info("serial: reading %s (%s, %d baud %d%s%g) as stream %s", c.port, c.mode,
                     c.baud, c.bytesize, c.parity, c.stopbits,
                     c.resolved_stream or "dev{device_id}")
            src.start()

    def _on_message(self, topic: str, payload: bytes, props: Any) -> None:
        """paho network thread: enqueue only."""
        if self.models is not None and self.models.owns(topic):
            self.models.on_message(topic, payload)
            return
        size = len(payload)  # an oversized body is refused by size, its bytes never queued
        if topic == self.tree.config_desired:
            if size > self.cfg.control.max_desired_bytes:
                payload = b""
            self.ingest.put_control(lambda: self._apply_desired(payload, signed_on=topic,
                                                                size=size))
            return
        name = self.tree.command_name(topic)
        if name is not None:
            rt = getattr(props, "ResponseTopic", None)
            cd = getattr(props, "CorrelationData", None)
            if size > self.cfg.control.max_command_bytes:
                payload = b""
            self.ingest.put_control(lambda: self._command(name, payload, rt, cd, size))
            return
        self.ingest.put_data(topic, payload)

    def _on_connected(self, generation: int) -> None:
        """paho network thread: announce ourselves, wake the outbox."""
        t = self.transport
        t.publish(self.tree.status, _dumps(status_payload("online", self.session, time.time(),
                                                          f"connect {generation}")), 1, True)
        t.publish(self.tree.birth, self._birth, 1, True)
        if self.models is not None:
            self.models.on_connected()
        self.publisher.notify()

    def _refresh_birth(self) -> None:
        proto = "5" if self.transport.v5 else "3.1.1"
        doc = birth_payload(self.cfg, self.engine, self.session, time.time(), proto)
        if self.events is not None:
            doc["events"] = self.events.birth()
        self._birth = _dumps(doc)

    # ----------------------------------------------------------------- worker
    def _work(self) -> None:
        ing = self.ingest
        engine, model = self.engine, self.model
        try:
            while True:
                while ing.control:  # between bursts, never inside one
                    ing.control.popleft()()
                    if self.engine is not engine or self.model is not model:  # replaced
                        engine, model = self.engine, self.model
                        refreeze_heap()  # the old ones collected, the new ones frozen
                if self._drain():
                    continue
                if self._stop.is_set():
                    return
                ing.wake.wait(0.2)
                ing.wake.clear()
        except BaseException as exc:  # outer supervisor of the worker: report and stop
            log.exception("detection worker failed")
            self.failed = exc

    def _drain(self) -> int:
        """Take the queued messages there are now (one, or a burst of up to
        ``BURST_MAX_MESSAGES`` / ``BURST_MAX_POINTS``), score all their points through one
        :meth:`Engine.process_batch` call; the number of messages taken (0: queue empty).

        With one point per message, an engine call per message costs a wake-up and cold
        caches per point; one call over a burst amortises them, and ``process_batch`` is
        exactly ``process()`` point by point in queue order, so decisions do not change.
        Only messages already queued are taken: a lone message is scored at once.
        """
        data = self.ingest.data
        points: list[Point] = []
        t_ins: list[float] = []  # receive time of each message that had points
        taken = 0
        while taken < BURST_MAX_MESSAGES and len(points) < BURST_MAX_POINTS:
            try:
                topic, payload, t_in = data.popleft()
            except IndexError:
                break
            taken += 1
            if isinstance(payload, Point):  # decoded by a serial source
                points.append(payload)
                t_ins.append(t_in)
                continue
            self.messages_in += 1
            if self.events is not None and self.events.source_for(topic) is not None:
                self._score(points, t_ins)  # the points queued before it go first
                if self.events.handle(topic, payload, time.time()):
                    self.latency.add(time.monotonic() - t_in)
                continue
            got = self._parse(topic, payload)
            if got:
                points += got
                t_ins.append(t_in)
        self._score(points, t_ins)
        if taken > 1:
            self.bursts += 1
            self.burst_max = max(self.burst_max, taken)
        return taken

    def _parse(self, topic: str, payload: bytes) -> list[Point]:
        """Route and parse one sensor message; its rejects are counted, its points returned."""
        route = _INPUT_ROUTE if topic == INPUT_TOPIC else self._router.route(topic)
        eng = self.engine
        if route is None:
            eng.rejects.reject("unknown_topic", f"no ingest route for {topic!r}")
            return []
        fallback = Router.fallback_stream(topic)
        sc = self.cfg.stream(route.stream or fallback or "")
        parsed = parse_payload(payload, stream=route.stream, now=time.time(),
                               channels=sc.channel_names if sc else None, fmt=route.format,
                               max_bytes=self.cfg.mqtt.max_payload_bytes,
                               max_points=self.cfg.mqtt.max_points,
                               default_stream=fallback)
        self.ts_defaulted += parsed.ts_defaulted
        for reason, detail in parsed.rejects:
            eng.rejects.reject(reason, f"{topic}: {detail}")
        return parsed.points

    def _score(self, points: list[Point], t_ins: list[float]) -> None:
        """Score gathered points in one engine call, one latency sample per message; clear
        both lists (the caller goes on gathering)."""
        if not points:
            return
        for d in self.engine.process_batch(points):  # (= process() point by point)
            if self.on_decision is not None:
                self.on_decision(d)
        now = time.monotonic()
        for t_in in t_ins:
            self.latency.add(now - t_in)
        points.clear()
        t_ins.clear()

    def _tick(self) -> None:
        next_stats = time.monotonic() + self.cfg.agent.stats_interval_s
        next_ckpt = time.monotonic() + self.cfg.checkpoint.interval_s
        next_fresh = 0.0
        while not self._stop.wait(0.1):
            now = time.monotonic()
            if now >= next_fresh and not self._fresh_pending:  # one check queued at a time
                next_fresh = now + CHECK_S
                self._fresh_pending = True
                self.ingest.put_control(self._check_fresh)
            if now >= next_stats:
                next_stats = now + self.cfg.agent.stats_interval_s
                self.ingest.put_control(self._publish_stats)
            if now >= next_ckpt:
                next_ckpt = now + self.cfg.checkpoint.interval_s
                if self._ckpt is not None:
                    self.ingest.put_control(self._timed_checkpoint)

    def _check_fresh(self) -> None:
        """Worker: publish ``stale`` / ``fresh`` events on ``alert/{stream}`` (via the store)."""
        self._fresh_pending = False
        cfg = self.cfg
        limits = {s.id: cfg.stale_after(s) for s in cfg.streams}
        events = self.freshness.check(limits, self.engine.accepted, now=time.monotonic(),
                                      wall=time.time())
        if events and self.upstream:
            for ev in events:
                self.store.put(self.tree.alert(ev["stream"]), ev, now=time.time(), qos=1,
                               held=not self.transport.connected)
            self.publisher.notify()

    # ----------------------------------------------------------------- stats
    def stats(self) -> dict[str, Any]:
        t = self.transport
        extra = {
            "messages_in": self.messages_in,
            "ts_defaulted": self.ts_defaulted,
            "latency_ms": self.latency.summary_ms(),
            "queue": {"depth": len(self.ingest.data), "capacity": self.ingest.data.maxlen,
                      "dropped": self.ingest.dropped,
                      "control_dropped": self.ingest.control_dropped,
                      "bursts": self.bursts, "burst_max": self.burst_max},
            "store": self.store.stats() | {"published": self.publisher.published},
            "storage": self.store.health() | {"checkpoint": dict(self.ckpt_health)},
            "mqtt": ({"connected": t.connected, "protocol": "5" if t.v5 else "3.1.1",
                      **t.counts} if self.upstream else {"enabled": False}),
            "serial": {src.config.port: src.stats() for src in self.serial},
            "model_update": self.models.stats() if self.models else {"enabled": False},
            "control": self.guard.stats(),
            "freshness": self.freshness.stats(),
            "events": self.events.stats() if self.events else {"enabled": False},
        }
        return stats_payload(self.cfg, self.engine, now=time.time(),
                             uptime_s=time.monotonic() - self.started, session=self.session,
                             extra=extra)

    def _publish_stats(self) -> dict[str, Any]:
        st = self.stats()
        if self.metrics is not None:
            self.metrics.update(st)
        if not self.upstream:  # no broker: one JSON line on stderr, in a single write
            sys.stderr.write(_dumps({"stats": st}).decode() + "\n")
            sys.stderr.flush()
        elif self.cfg.store.stats:
            self.store.put(self.tree.stats, st, now=time.time(), retain=True,
                           held=not self.transport.connected)
            self.publisher.notify()
        else:
            self.transport.publish(self.tree.stats, _dumps(st), 1, True)
        return st

    def _checkpoint(self) -> dict[str, Any]:
        if self._ckpt is None:
            raise CommandError(409, "checkpoint.path is not configured")
        h = self.ckpt_health
        try:
            size = self.engine.save(self._ckpt)
            if self.events is not None:
                size += self.events.save(event_live.events_checkpoint_path(self._ckpt))
        except OSError as exc:  # disk full / read-only: detection goes on, stats report it
            if h["ok"]:
                log.error("checkpoint %s not written (retried every interval): %s",
                          self._ckpt, exc)
                h.update(ok=False, since=time.time())
            h.update(error=f"{type(exc).__name__}: {exc}", failures=h["failures"] + 1)
            raise CommandError(507, f"checkpoint not written: {exc}") from exc
        if not h["ok"]:
            log.info("checkpoint %s written again", self._ckpt)
            h.update(ok=True, error=None, since=None)
        return {"path": str(self._ckpt), "bytes": size}

    def _timed_checkpoint(self) -> None:
        with contextlib.suppress(CommandError):  # counted, reported in stats.storage
            self._checkpoint()

    # ----------------------------------------------------------------- control
    def _command(self, name: str, payload: bytes, rt: str | None, cd: bytes | None,
                 size: int | None = None) -> None:
        verdict = self.guard.check(self.tree.command(name), payload, time.time(),
                                   limit=self.cfg.control.max_command_bytes, size=size)
        cmd = parse_command(name, verdict.payload, rt, cd)
        reply = dispatch(self, cmd, self.cfg.control.commands, self.engine.streams
                         ) if verdict.ok else {"cmd": name, "id": cmd.request_id,
                                               "code": verdict.code, "error": verdict.detail}
        props = None
        topic = self.tree.command_response(name)
        if rt and self.transport.v5:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.PUBLISH)
            if cd is not None:
                props.CorrelationData = cd
            topic = rt
        self.transport.publish(topic, _dumps(reply), 1, False, props)

    def _apply_desired(self, payload: bytes, reported: bool = True,
                       signed_on: str | None = None, size: int | None = None
                       ) -> dict[str, Any]:
        verdict = self.guard.check(signed_on, payload, time.time(), size=size,
                                   limit=self.cfg.control.max_desired_bytes
                                   ) if signed_on else None
        if verdict is not None and not verdict.ok:
            out = DesiredOutcome(None, verdict.code, verdict.detail)
        else:
            out = evaluate_desired(self.base, self.overlay, verdict.payload if verdict else
                                   payload, self.cfg, self.config_path)
        if out.code == 200 and not out.unchanged:
            assert out.config is not None and out.overlay is not None
            try:
                self._apply(out.config, out.overlay)
            except (AgentError, OSError) as exc:
                log.error("config %s not applied: %s", out.version, exc)
                out = dataclasses.replace(out, code=500, error=str(exc))
        if out.code != 200:
            log.warning("config/desired version %s refused (%d): %s", out.version, out.code,
                        out.error)
        if reported:
            self.transport.publish(self.tree.config_reported, _dumps(out.reported()), 1, True)
        return out.reported()

    def _apply(self, cfg: AgentConfig, overlay: dict[str, Any] | None) -> None:
        """Swap in a validated config between two points (nothing is dropped)."""
        old = self.cfg
        model = self.model
        if cfg.detectors.onnx != old.detectors.onnx:
            model = model_from_config(cfg.detectors.onnx, cfg.resolve_path)
        engine = self.engine
        if any(getattr(cfg, k) != getattr(old, k) for k in _DETECTION) or model is not self.model:
            engine = self._make_engine(cfg, model)
            kept = engine.adopt(self.engine)
            log.info("detection reconfigured; state kept for streams %s", kept)
        if overlay is not None and cfg.control.desired_path:
            p = cfg.resolve_path(cfg.control.desired_path)
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_name(p.name + ".tmp")
            tmp.write_text(json.dumps(overlay, indent=1), encoding="utf-8")
            os.replace(tmp, p)
        self.engine, self.model, self.cfg = engine, model, cfg
        if overlay is not None:
            self.overlay = overlay
        logging.getLogger().setLevel(cfg.agent.log_level.upper())
        if cfg.mqtt.ingest != old.mqtt.ingest:
            old_filters = {r.topic for r in self._router.routes}
            self._router = self._make_router(cfg)
            new_filters = {r.topic for r in self._router.routes}
            self.transport.unsubscribe(sorted(old_filters - new_filters))
            self.transport.subscribe([(f, cfg.mqtt.ingest_qos) for f in
                                      sorted(new_filters - old_filters)])
        self._refresh_birth()
        self.transport.publish(self.tree.birth, self._birth, 1, True)
        log.info("config version %s applied", cfg.version)

    # CommandTarget ---------------------------------------------------------
    def cmd_ping(self) -> dict[str, Any]:
        return {"pong": True, "ts": time.time(), "session": self.session,
                "uptime_s": round(time.monotonic() - self.started, 3)}

    def cmd_rebirth(self) -> dict[str, Any]:
        self._refresh_birth()
        self.transport.publish(self.tree.birth, self._birth, 1, True)
        return {"published": self.tree.birth}

    def cmd_rebaseline(self, stream: str | None) -> dict[str, Any]:
        return {"streams": self.engine.rebaseline(stream)}

    def cmd_reload(self) -> dict[str, Any]:
        base, _overlay, _cfg = load_effective(self.config_path)  # ConfigError -> 500 reply
        self.base = base
        doc = _dumps(dict(self.overlay, version=self.overlay.get("version", _cfg.version)))
        reported = self._apply_desired(doc, reported=False)
        if reported["code"] != 200:
            raise CommandError(400, str(reported["error"]))
        return {"version": self.cfg.version}

    def cmd_set_log_level(self, level: str) -> dict[str, Any]:
        logging.getLogger().setLevel(level.upper())
        return {"level": level}

    def cmd_flush(self, timeout_s: float) -> dict[str, Any]:
        ok = self.publisher.wait_empty(timeout_s)
        if not ok:
            raise CommandError(504, f"outbox not empty after {timeout_s} s "
                                    f"({self.store.backlog()} pending)")
        return {"backlog": 0}

    def cmd_stats_now(self) -> dict[str, Any]:
        return self._publish_stats()

    def cmd_checkpoint(self) -> dict[str, Any]:
        return self._checkpoint()

    def cmd_model_rollback(self, kind: str | None) -> dict[str, Any]:
        if self.models is None:
            raise CommandError(409, "model updates are off (models.dir is not set)")
        return self.models.request_rollback(kind)

    # ----------------------------------------------------------------- shutdown
    def shutdown(self, flush_timeout: float = 5.0) -> None:
        """Stop ingest, drain the queue, checkpoint, flush the outbox, publish offline."""
        log.info("shutdown: stopping ingest")
        self.ingest.accepting = False
        for src in self.serial:
            src.close()
        self.transport.unsubscribe([r.topic for r in self._router.routes] +
                                   (self.events.topics() if self.events else []))
        self._stop.set()
        self.ingest.wake.set()
        self._worker.join(30.0)
        self._timers.join(2.0)
        if self.models is not None:
            self.models.stop()
        if self._ckpt is not None and self.failed is None:
            try:
                log.info("shutdown: checkpoint %s (%d bytes)", self._ckpt,
                         self._checkpoint()["bytes"])
            except CommandError as exc:
                log.error("shutdown: %s", exc)
        if self.transport.connected and not self.publisher.wait_empty(flush_timeout):
            log.warning("shutdown: %d messages stay in the outbox", self.store.backlog())
        self.publisher.stop()
        self.transport.publish_wait(
            self.tree.status,
            _dumps(status_payload("offline", self.session, time.time(), "shutdown")), 1, True,
            timeout=2.0)
        self.transport.stop()
        if not self.upstream and self.failed is None:
            self._publish_stats()  # the final figures, for a run without a broker
        if self.metrics is not None:
            self.metrics.close()
        for s in self.engine.sinks:
            s.close()
        self.store.close()
        unfreeze_heap()  # an embedding process (tests, demo) gets its usual collector back
        log.info("shutdown complete")

