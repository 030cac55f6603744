"""Model updates in the live agent: ``model/offer``, ``model/chunk/{version}/{n}``,
``model/state``, ``cmd/model_rollback``, the watched directory and the health check.

Threads (see :mod:`agent.runtime`): paho's network thread only enqueues offers and chunks
here; the ``models`` thread of this module writes chunks, verifies (a shadow
onnxruntime session, golden vectors) and keeps the store, so detection never waits for
a verification; the swap itself is a control item on the detection thread, run between
two points (``Engine.set_model``), as is the post-activation health check. Pure parts:
:mod:`agent.model_store` (files) and :class:`HealthWatch` below.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from agent.config import AgentConfig
from agent.control import CommandError
from agent.errors import ModelLoadError, ModelUpdateError, Reason
from agent.jsonsafe import loads as loads_json
from agent.model_kind import AUTOENCODER, check_event_fit, peek_kind
from agent.model_meta import NEXT_EVENT
from agent.model_store import (
    CONFIG,
    ModelStore,
    Offer,
    Staging,
    check_signature,
    mark_drop,
    parse_offer,
    ranges,
    ready_drops,
    verify_model,
)
from agent.onnx_scorer import OnnxModel, Scored, ScoredBatch, model_from_config
from agent.signing import KeyRing
from agent.topics import TopicTree

log = logging.getLogger(__name__)

STATES = ("receiving", "received", "verified", "active", "failed", "rolled_back")


class WatchedModel(OnnxModel):
    """A loaded model plus counters for the health check: windows, errors, first use.

    Shares the session and metadata of ``model`` (nothing is loaded twice). A window
    on which onnxruntime fails is counted and scores 0 (a decision is still made for
    the point); the health check rolls the model back when errors exceed the limit.
    """

    def __init__(self, model: OnnxModel, clock: Callable[[], float] = time.monotonic) -> None:
        self.__dict__.update(model.__dict__)  # no super().__init__: the session is loaded
        self.clock = clock
        self.windows = 0
        self.errors = 0
        self.first_scored: float | None = None

    def score_batch(self, windows: np.ndarray) -> ScoredBatch:
        try:
            out = super().score_batch(windows)
        except Exception as exc:  # onnxruntime raises several unrelated types at run time
            self._failed(exc)
            n = len(windows)
            return ScoredBatch(np.full(n, math.nan), np.zeros(n), None)
        self._scored(len(out))
        return out

    def score_window(self, window: np.ndarray) -> Scored:
        try:
            out = super().score_window(window)
        except Exception as exc:  # onnxruntime raises several unrelated types at run time
            self._failed(exc)
            return Scored(math.nan, 0.0, None)
        self._scored(1)
        return out

    def _scored(self, n: int) -> None:
        if self.first_scored is None:
            self.first_scored = self.clock()
        self.windows += n

    def _failed(self, exc: Exception) -> None:
        self.errors += 1
        if self.errors == 1:
            log.error("model %s %s failed to score a window: %s", self.meta.name,
                      self.meta.version, exc)


@dataclass
class HealthWatch:
    """The post-activation check of a new model; pure (time and counts come in).

    Fails as soon as the model's errors exceed ``max_errors`` or the alerts raised since
    activation exceed ``max_alert_rate_per_min`` over ``window_s`` (so a storm is caught
    before the window ends); passes when ``window_s`` has elapsed.

    >>> w = HealthWatch(started=0.0, alerts0=5, window_s=60, max_rate=2, max_errors=0)
    >>> w.verdict(10.0, alerts=7, errors=0) is None
    True
    >>> w.verdict(11.0, alerts=8, errors=0)[0].value
    'alert_storm'
    >>> w.verdict(61.0, alerts=7, errors=0)
    True
    """

    started: float
    alerts0: int
    window_s: float
    max_rate: float
    max_errors: int

    def verdict(self, now: float, alerts: int, errors: int) -> tuple[Reason, str] | bool | None:
        """``(reason, detail)`` on failure, True once passed, None while watching."""
        if errors > self.max_errors:
            return Reason.HEALTH_ERRORS, (f"{errors} onnxruntime errors > max_errors "
                                          f"{self.max_errors}")
        n = alerts - self.alerts0
        if n > self.max_rate * self.window_s / 60.0:
            return Reason.ALERT_STORM, (
                f"{n} alerts in {now - self.started:.1f} s > {self.max_rate:g}/min over "
                f"{self.window_s:g} s")
        return True if now - self.started >= self.window_s else None


class UpdateHost(Protocol):
    """What the live agent offers this module (all used on the detection thread except
    ``cfg``, ``transport``, ``tree`` and ``ingest``, which are thread-safe to read)."""

    cfg: AgentConfig
    model: OnnxModel | None
    engine: Any
    transport: Any
    tree: TopicTree
    ingest: Any
    events: Any  # agent.events.live.EventLive | None: the next-event model's slot

    def cmd_rebirth(self) -> dict[str, Any]: ...


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), default=str).encode()


def _item_bytes(item: tuple[Any, ...]) -> int:
    """Payload bytes a queued ``(topic, payload)`` item holds (0 for a callable item)."""
    return len(item[1]) if not callable(item[0]) and isinstance(item[1], bytes) else 0


class ModelUpdater:
    """Receives, verifies, activates and rolls back models for one live agent."""

    def __init__(self, host: UpdateHost, clock: Callable[[], float] = time.monotonic) -> None:
        cfg = host.cfg
        mc = cfg.models
        assert mc.dir is not None
        self.host = host
        self.config = mc
        self.clock = clock
        self.keys = KeyRing.from_files([cfg.resolve_path(k) for k in mc.public_keys])
        self.store = ModelStore(cfg.resolve_path(mc.dir), mc.keep)
        # one active model per kind: next_event models have a store (pointer) of their own
        self.event_store = ModelStore(cfg.resolve_path(mc.dir) / NEXT_EVENT, mc.keep)
        self._last_kind = AUTOENCODER  # what cmd/model_rollback undoes
        self._watch_kind = AUTOENCODER
        self.watch_dir = cfg.resolve_path(mc.watch_dir) if mc.watch_dir else None
        self.counts: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.swap_ms: float | None = None
        self.first_window_ms: float | None = None
        self._queue: queue.Queue[tuple[Any, ...]] = queue.Queue(maxsize=10_000)
        self._queued_bytes = 0  # payload bytes waiting in _queue (<= models.max_queue_bytes)
        self._room = threading.Condition()
        self._staging: Staging | None = None
        self._last_chunk = 0.0
        self._stall_reported = False
        self._watch: HealthWatch | None = None
        self._health_pending = False
        self._verified_at: float | None = None
        self._cache: dict[str, Any] = {}
        self._last_state: bytes | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="models", daemon=True)

    # ------------------------------------------------------------------ wiring (agent)
    def subscriptions(self) -> list[tuple[str, int]]:
        t = self.host.tree
        return [(t.model_offer, 1), (t.model_chunks, 1)]

    def owns(self, topic: str) -> bool:
        return topic.startswith(f"{self.host.tree.root}/model/")

    def on_message(self, topic: str, payload: bytes) -> None:
        """paho network thread: enqueue only (blocking briefly rather than losing a chunk).

        An offer over ``models.max_offer_bytes`` or a chunk over ``max_chunk_bytes`` is
        not queued (the queue would otherwise hold up to 10 000 unchecked payloads): only
        its size goes to the models thread, which refuses it."""
        mc = self.config
        limit = mc.max_offer_bytes if topic == self.host.tree.model_offer else mc.max_chunk_bytes
        item: tuple[Any, ...] = (topic, payload)
        if len(payload) > limit:
            item = (self._oversize, topic, len(payload), limit)
        n = _item_bytes(item)
        with self._room:  # the bytes waiting are bounded too, not only their count
            if not self._room.wait_for(
                    lambda: self._queued_bytes + n <= mc.max_queue_bytes, timeout=5.0):
                self.counts["dropped"] += 1
                return
            self._queued_bytes += n
        try:
            self._queue.put(item, timeout=5.0)
        except queue.Full:
            self._release(n)
            self.counts["dropped"] += 1

    def _release(self, n: int) -> None:
        if n:
            with self._room:
                self._queued_bytes -= n
                self._room.notify_all()

    def _oversize(self, topic: str, size: int, limit: int) -> None:
        self.counts["oversize"] += 1
        detail = f"{size} bytes on {topic.rsplit('/model/', 1)[-1]}, limit {limit}"
        if topic == self.host.tree.model_offer:
            self.counts["offers"] += 1
            self._set_state("failed", reason=Reason.TOO_LARGE, detail=f"offer of {detail} "
                            "(models.max_offer_bytes)", origin="mqtt")
        elif self.counts["oversize"] == 1:
            log.warning("model update: chunk of %s (models.max_chunk_bytes) dropped unread; "
                        "further ones are only counted", detail)

    def on_connected(self) -> None:
        if self._last_state is not None:
            self.host.transport.publish(self.host.tree.model_state, self._last_state, 1, True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10.0)

    def startup_model(self) -> OnnxModel | None:
        """The last active model from the store (verified again), None for the configured."""
        sha = self.store.pointer().current
        if sha is None:
            return None
        try:
            data, manifest = self.store.load(sha)
            model = WatchedModel(self._verify(data, manifest).model, self.clock)
        except ModelUpdateError as exc:
            log.error("last active model %s refused at start, using the configured one: %s",
                      sha[:16], exc)
            self._set_state("failed", manifest={"sha256": sha}, reason=exc.reason,
                            detail=exc.detail, origin="startup")
            return None
        self._cache = {sha: model}
        log.info("stage 3: last active model %s %s (%s...)", model.meta.name,
                 model.meta.version, sha[:16])
        self._set_state("active", manifest=manifest, model=model, origin="startup")
        return model

    def startup_event_model(self) -> Any:
        """The last active next-event model from its store, None for the configured."""
        sha = self.event_store.pointer().current
        if sha is None:
            return None
        try:
            data, manifest = self.event_store.load(sha)
            model = self._verify(data, manifest).model
        except ModelUpdateError as exc:
            log.error("last active next-event model %s refused at start, using the "
                      "configured one: %s", sha[:16], exc)
            self._set_state("failed", manifest={"sha256": sha}, reason=exc.reason,
                            detail=exc.detail, origin="startup", kind=NEXT_EVENT)
            return None
        self._cache[sha] = model
        log.info("events stage 3: last active model %s %s (%s...)", model.meta.name,
                 model.meta.version, sha[:16])
        self._set_state("active", manifest=manifest, model=model, origin="startup",
                        kind=NEXT_EVENT)
        return model

    # ------------------------------------------------------------------ kinds
    def _store_of(self, kind: str) -> ModelStore:
        return self.event_store if kind == NEXT_EVENT else self.store

    def _current(self, kind: str) -> Any:
        if kind == NEXT_EVENT:
            ev = getattr(self.host, "events", None)
            return ev.model if ev is not None else None
        return self.host.model

    def _active_shas(self) -> set[str]:
        return {m.sha256 for m in (self._current(AUTOENCODER), self._current(NEXT_EVENT))
                if m is not None}

    def _alerts(self, kind: str) -> int:
        if kind == NEXT_EVENT:
            ev = getattr(self.host, "events", None)
            return sum(ev.engine.alert_counts.values()) if ev is not None else 0
        return sum(self.host.engine.alert_counts.values())

    def stats(self) -> dict[str, Any]:
        return {
            **dict(sorted(self.counts.items())),
            "failures": dict(sorted(self.failures.items())),
            "receiving": (None if self._staging is None else
                          {"version": self._staging.offer.version,
                           "have": len(self._staging.have),
                           "chunks": self._staging.offer.chunks}),
            "health_watch": self._watch is not None,
            "swap_ms": self.swap_ms,
            "first_window_ms": self.first_window_ms,
        }

    # ------------------------------------------------------------------ state
    def _set_state(self, state: str, *, manifest: Any = None, model: OnnxModel | None = None,
                   reason: Reason | None = None, detail: str | None = None,
                   **extra: Any) -> None:
        m = manifest if isinstance(manifest, dict) else {}
        doc = {"state": state, "name": m.get("name"), "version": m.get("version"),
               "sha256": m.get("sha256"), "reason": reason.value if reason else None,
               "detail": detail, "ts": time.time(), **extra}
        if model is not None:
            doc |= {"name": model.meta.name, "version": model.meta.version,
                    "sha256": model.sha256, "provider": model.provider}
        if state == "failed" and reason is not None:
            self.failures[reason.value] += 1
        (log.warning if state in ("failed", "rolled_back") else log.info)(
            "model %s %s %s%s", state, doc["name"], doc["version"],
            f": {doc['reason']}: {detail}" if reason else "")
        self._last_state = _dumps(doc)
        self.host.transport.publish(self.host.tree.model_state, self._last_state, 1, True)

    # ------------------------------------------------------------------ models thread
    def _run(self) -> None:
        next_scan = 0.0
        while not self._stop.is_set():
            try:
                item = self._queue.get(timeout=0.1)
                self._release(_item_bytes(item))
            except queue.Empty:
                item = None
            try:
                if item is not None:
                    self._handle(item)
                now = self.clock()
                self._check_stall(now)
                if self.watch_dir is not None and now >= next_scan:
                    next_scan = now + self.config.watch_interval_s
                    self._scan_watch_dir()
                if self._watch is not None and not self._health_pending:
                    self._health_pending = True
                    self.host.ingest.put_control(self._check_health)
            except (ModelUpdateError, OSError) as exc:  # a store problem must not kill us
                log.error("model update: %s", exc)
                self.counts["errors"] += 1
            except Exception:  # outer supervisor of the models thread: log and carry on
                log.exception("model update failed")
                self.counts["errors"] += 1

    def _handle(self, item: tuple[Any, ...]) -> None:
        if callable(item[0]):
            item[0](*item[1:])
            return
        topic, payload = item
        if topic == self.host.tree.model_offer:
            self._on_offer(payload)
            return
        chunk = self.host.tree.chunk_of(topic)
        if chunk is None:
            self.counts["unknown_topic"] += 1
            return
        self._on_chunk(*chunk, payload)

    def _on_offer(self, payload: bytes) -> None:
        self.counts["offers"] += 1
        mc = self.config
        manifest: Any = None
        offer_id: Any = None
        with contextlib.suppress(ValueError, AttributeError, UnicodeDecodeError):
            body = loads_json(payload)
            manifest, offer_id = body.get("manifest"), str(body.get("offer_id"))[:64]
        try:
            offer = parse_offer(payload, max_bytes=mc.max_bytes, max_chunks=mc.max_chunks,
                                max_chunk_bytes=mc.max_chunk_bytes)
            check_signature(offer.manifest, self.keys, mc.require_signed)  # before any chunk
        except ModelUpdateError as exc:
            self._set_state("failed", manifest=manifest, reason=exc.reason, detail=exc.detail,
                            offer_id=offer_id, origin="mqtt")
            return
        for kind in (AUTOENCODER, NEXT_EVENT):
            current = self._current(kind)
            if current is not None and current.sha256 == offer.sha256:
                self._set_state("active", manifest=offer.manifest, model=current, kind=kind,
                                offer_id=offer.offer_id, detail="already active",
                                origin="mqtt")
                return
        staging = self.store.stage(offer)
        self._staging, self._last_chunk, self._stall_reported = staging, self.clock(), False
        self._set_state("receiving", manifest=offer.manifest, offer_id=offer.offer_id,
                        chunks=offer.chunks, missing=ranges(staging.missing()), origin="mqtt")
        if staging.complete:
            self._finish(staging)

    def _on_chunk(self, version: str, n: int, data: bytes) -> None:
        self.counts["chunks"] += 1
        staging = self._staging
        if staging is None or staging.offer.version != version:
            staging = self.store.resume(version)  # an offer from before a restart
            if staging is None:
                self.counts["chunks_without_offer"] += 1
                return
            self._staging = staging
        try:
            if not staging.put(n, data):
                self.counts["duplicates"] += 1
        except ModelUpdateError as exc:
            self.counts["bad_chunks"] += 1
            log.warning("model %s: %s", version, exc)
            return
        self._last_chunk, self._stall_reported = self.clock(), False
        if staging.complete:
            self._finish(staging)

    def _check_stall(self, now: float) -> None:
        s = self._staging
        if s is None or self._stall_reported or now - self._last_chunk < self.config.stall_s:
            return
        self._stall_reported = True
        missing = s.missing()
        self._set_state("failed", manifest=s.offer.manifest, reason=Reason.MISSING_CHUNKS,
                        detail=f"{len(missing)} of {s.offer.chunks} chunks missing after "
                               f"{self.config.stall_s:g} s; resend them to resume",
                        offer_id=s.offer.offer_id, missing=ranges(missing), origin="mqtt")

    def _finish(self, staging: Staging) -> None:
        offer: Offer = staging.offer
        self._staging = None
        data = staging.assemble()
        staging.discard()
        self._set_state("received", manifest=offer.manifest, offer_id=offer.offer_id,
                        origin="mqtt")
        self._verify_and_activate(data, offer.manifest, "mqtt", offer_id=offer.offer_id)

    def _scan_watch_dir(self) -> None:
        assert self.watch_dir is not None
        for path, manifest in ready_drops(self.watch_dir):
            origin = f"watch:{path.name}"
            if manifest is None:
                self._set_state("failed", reason=Reason.BAD_MANIFEST,
                                detail=f"{path.name}.manifest.json is not valid JSON",
                                origin=origin)
                mark_drop(path, False)
                continue
            if manifest.get("sha256") in self._active_shas():
                mark_drop(path, True)
                continue
            try:
                data = path.read_bytes()
            except OSError as exc:
                log.warning("%s: %s", path, exc)
                continue
            mark_drop(path, self._verify_and_activate(data, manifest, origin))

    # ------------------------------------------------------------------ verify, activate
    def _load(self, data: bytes, source: str) -> Any:
        """The shadow session of the model's kind (no golden checks: verify_model runs
        them)."""
        if peek_kind(data) == NEXT_EVENT:
            from agent.events.sequence import NextEventModel

            sc = self.host.cfg.events.sequence
            return NextEventModel(data, providers=sc.providers,
                                  intra_op_threads=sc.intra_op_threads, verify_golden=False,
                                  source=source, top_k=sc.top_k, min_prob=sc.min_prob)
        o = self.host.cfg.detectors.onnx
        return OnnxModel(data, providers=o.providers, intra_op_threads=o.intra_op_threads,
                         inter_op_threads=o.inter_op_threads, verify_golden=False,
                         source=source)

    def _verify(self, data: bytes, manifest: Any) -> Any:
        mc = self.config
        return verify_model(data, manifest, keys=self.keys, require_signed=mc.require_signed,
                            max_bytes=mc.max_bytes, streams=self.host.cfg.streams,
                            load=self._load, event_fit=self._event_fit)

    def _event_fit(self, model: Any, manifest: Any) -> None:
        ev = self.host.cfg.events
        check_event_fit(model, manifest, ev.sources, ev.sequence.history)
        if not ev.live:
            raise ModelUpdateError(Reason.FEATURES_MISMATCH, "a next_event model, but the "
                                                             "event sources are not live "
                                                             "(events.live: false)")

    def _verify_and_activate(self, data: bytes, manifest: Any, origin: str,
                             offer_id: str = "") -> bool:
        try:
            verified = self._verify(data, manifest)
        except ModelUpdateError as exc:
            self._set_state("failed", manifest=manifest, reason=exc.reason,
                            detail=exc.detail, offer_id=offer_id, origin=origin)
            return False
        self._set_state("verified", manifest=verified.manifest, offer_id=offer_id,
                        key_id=verified.key_id, origin=origin, kind=verified.model.meta.kind)
        verified_at = self.clock()
        kind = verified.model.meta.kind
        store = self._store_of(kind)
        sha = store.save(data, verified.manifest)
        store.activate(sha, time.time())
        model = verified.model if kind == NEXT_EVENT else WatchedModel(verified.model,
                                                                       self.clock)
        self.host.ingest.put_control(lambda: self._swap(
            model, "active", verified_at, kind=kind, origin=origin, offer_id=offer_id))
        return True

    def _swap(self, model: Any, state: str, verified_at: float | None,
              kind: str = AUTOENCODER, **extra: Any) -> None:
        """Detection thread, between two points (or two events)."""
        t0 = self.clock()
        host = self.host
        previous = self._current(kind)
        if kind == NEXT_EVENT:
            used = host.events.set_model(model) if host.events is not None else []
            log.info("next-event model %s scores sources %s",
                     model.meta.version if model is not None else None, used)
        else:
            host.engine.set_model(model)
            host.model = model
        other = self._current(NEXT_EVENT if kind == AUTOENCODER else AUTOENCODER)
        self._cache = {m.sha256: m for m in (model, previous, other) if m is not None}
        self._last_kind = kind
        if verified_at is not None:
            self.swap_ms = (t0 - verified_at) * 1000.0
            self._verified_at = verified_at
        self.counts["activations" if state == "active" else "rollbacks"] += 1
        host.cmd_rebirth()
        h = self.config.health
        self._watch = None
        if state == "active":
            self._watch_kind = kind
            self._watch = HealthWatch(t0, self._alerts(kind), h.window_s,
                                      h.max_alert_rate_per_min, h.max_errors)
        self._set_state(state, model=model, kind=kind, **extra)

    def _check_health(self) -> None:
        """Detection thread: the post-activation health check of the active model."""
        self._health_pending = False
        kind = self._watch_kind
        watch, model = self._watch, self._current(kind)
        if watch is None:
            return
        if isinstance(model, WatchedModel) and model.first_scored is not None and (
                self.first_window_ms is None and self._verified_at is not None):
            self.first_window_ms = (model.first_scored - self._verified_at) * 1000.0
        errors = model.errors if isinstance(model, WatchedModel) else 0
        verdict = watch.verdict(self.clock(), self._alerts(kind), errors)
        if verdict is None:
            return
        self._watch = None
        if verdict is True:
            log.info("model %s passed its health check", model.sha256[:16] if model else None)
            return
        assert isinstance(verdict, tuple)
        self._queue.put((self._rollback, verdict[0], verdict[1], "health", kind))

    # ------------------------------------------------------------------ rollback
    def request_rollback(self, kind: str | None = None) -> dict[str, Any]:
        """``cmd/model_rollback`` (detection thread): check, then roll back off-thread.
        ``kind``: which model slot (None: the kind of the last activation)."""
        kind = kind or self._last_kind
        history = self._store_of(kind).pointer().history
        if not history:
            raise CommandError(409, f"{Reason.NOTHING_TO_ROLL_BACK.value}: no previous "
                                    f"{kind} model")
        if self._watch_kind == kind:  # the health check of the model rolled back ends here
            self._watch = None
        self._queue.put((self._rollback, None, "requested by cmd/model_rollback", "command",
                         kind))
        return {"rolling_back_to": history[0], "kind": kind}

    def _rollback(self, reason: Reason | None, detail: str, origin: str,
                  kind: str = AUTOENCODER) -> None:
        """Models thread: move the pointer back, load the target, swap it in."""
        current = self._current(kind)
        store = self._store_of(kind)
        model: Any
        try:
            ptr = store.rollback(time.time())
            target = ptr.current
            if target is None and kind == NEXT_EVENT:
                from agent.events.replay import load_sequence_model

                model = load_sequence_model(self.host.cfg)
            elif target is None:
                model = model_from_config(self.host.cfg.detectors.onnx, self.host.cfg.resolve_path)
            elif target in self._cache:
                model = self._cache[target]
            else:
                data, manifest = store.load(target)
                model = self._verify(data, manifest).model
                if kind != NEXT_EVENT:
                    model = WatchedModel(model, self.clock)
        except (ModelUpdateError, ModelLoadError, OSError) as exc:
            r = exc.reason if isinstance(exc, ModelUpdateError) else Reason.STORE_FAILED
            self._set_state("failed", model=current, reason=r, detail=f"rollback: {exc}",
                            origin=origin, kind=kind)
            return
        rolled = {"sha256": current.sha256, "name": current.meta.name,
                  "version": current.meta.version} if current is not None else None
        self.host.ingest.put_control(lambda: self._swap(
            model, "rolled_back", None, kind=kind, reason=reason, detail=detail, origin=origin,
            rolled_back=rolled, target=target or CONFIG))
