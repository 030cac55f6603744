"""``edge-export push``: send a model to a gateway over MQTT, in chunks, resumably.

Publishes an offer on ``{root}/model/offer`` (the manifest, the chunk count and size,
an ``offer_id``; repeated every 2 s until the gateway answers on ``model/state``), then
the file in numbered chunks on ``{root}/model/chunk/{version}/{n}`` at QoS 1, keeping
at most ``inflight`` chunks unacknowledged (a slow link is paced by its PUBACKs). It
then follows ``{root}/model/state`` until the gateway reports the offer ``active`` or
``failed``.

Resuming: ``--from-chunk N`` skips the chunks before N; ``--resume`` sends only the
chunks the gateway lists as missing in its ``receiving`` state for this model (it keeps
received chunks across restarts). Protocol: docs/model-update.md.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from export.errors import ExportError
from export.signing import build_manifest, manifest_path


class PushError(ExportError):
    """The push could not be completed (connection, timeout, or the gateway refused)."""


@dataclass(frozen=True)
class PushResult:
    state: dict[str, Any] | None
    sent: int
    chunks: int


def chunk_plan(size: int, chunk_size: int) -> int:
    return max(1, -(-size // chunk_size))


def expand(ranges: list[list[int]]) -> list[int]:
    """``[[0, 2], [5, 5]]`` -> ``[0, 1, 2, 5]``."""
    return [n for a, b in ranges for n in range(int(a), int(b) + 1)]


def load_manifest(model: Path, manifest: Path | None, unsigned: bool) -> dict[str, Any]:
    if manifest is None and not unsigned:
        manifest = manifest_path(model)
    if manifest is not None:
        return dict(json.loads(manifest.read_bytes()))
    from export.onnx_meta import get_meta, load_model

    meta = get_meta(load_model(model))
    return build_manifest(model.read_bytes(), name=meta.name, version=meta.version,
                          file=model.name, golden=[], targets=[])


class _Client:
    """A paho v2 client with waits for CONNACK, SUBACK, PUBACK and state messages."""

    def __init__(self, host: str, port: int, *, tls: dict[str, Any] | None,
                 username: str | None, password: str | None, timeout: float) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.timeout = timeout
        self.states: list[dict[str, Any]] = []
        self.cond = threading.Condition()
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"edge-export-push-{uuid.uuid4().hex[:8]}")
        if username:
            self.client.username_pw_set(username, password)
        if tls is not None:
            self.client.tls_set(ca_certs=tls.get("ca_file"), certfile=tls.get("cert_file"),
                                keyfile=tls.get("key_file"))
            if not tls.get("verify", True):
                self.client.tls_insecure_set(True)
        self.client.on_connect = lambda *a: self.connected.set()
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.max_inflight_messages_set(1000)
        try:
            self.client.connect(host, port, keepalive=30)
        except OSError as exc:
            raise PushError(f"cannot connect to {host}:{port}: {exc}") from exc
        self.client.loop_start()
        if not self.connected.wait(timeout):
            self.close()
            raise PushError(f"no CONNACK from {host}:{port} within {timeout:g} s")

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        try:
            doc = json.loads(msg.payload)
        except ValueError:
            return
        with self.cond:
            self.states.append(doc)
            self.cond.notify_all()

    def subscribe(self, topic: str) -> None:
        self.client.subscribe(topic, qos=1)
        if not self.subscribed.wait(self.timeout):
            raise PushError(f"no SUBACK for {topic}")

    def wait_state(self, pred: Callable[[dict[str, Any]], bool], timeout: float
                   ) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for s in self.states:
                    if pred(s):
                        return s
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(min(left, 0.2))

    def publish(self, topic: str, payload: bytes, qos: int) -> Any:
        info = self.client.publish(topic, payload, qos=qos)
        if info.rc != 0:
            raise PushError(f"publish to {topic} refused (rc {info.rc})")
        return info

    def wait_acked(self, info: Any) -> None:
        info.wait_for_publish(self.timeout)
        if not info.is_published():
            raise PushError(f"no PUBACK within {self.timeout:g} s (message {info.mid})")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def push(model: str | Path, *, manifest: str | Path | None, host: str, port: int,
         root: str, chunk_size: int = 65536, qos: int = 1, from_chunk: int = 0,
         resume: bool = False, inflight: int = 16, wait_s: float = 60.0,
         timeout: float = 10.0, tls: dict[str, Any] | None = None,
         username: str | None = None, password: str | None = None, unsigned: bool = False,
         log: Callable[[str], None] = lambda s: None) -> PushResult:
    """Offer ``model`` to the gateway under ``root`` and send its chunks (see module doc)."""
    model = Path(model)
    data = model.read_bytes()
    man = load_manifest(model, Path(manifest) if manifest else None, unsigned)
    if man.get("size") != len(data):
        raise PushError(f"{model}: {len(data)} bytes, manifest says {man.get('size')}")
    chunks = chunk_plan(len(data), chunk_size)
    offer_id = uuid.uuid4().hex[:16]
    version = str(man["version"])
    root = root.rstrip("/")
    c = _Client(host, port, tls=tls, username=username, password=password, timeout=timeout)
    try:
        c.subscribe(f"{root}/model/state")
        ours: Callable[[dict[str, Any]], bool] = lambda s: s.get("offer_id") == offer_id  # noqa: E731
        offer = {"offer_id": offer_id, "manifest": man, "chunks": chunks,
                 "chunk_size": chunk_size}
        todo = list(range(from_chunk, chunks))
        answered: Callable[[dict[str, Any]], bool] = lambda s: ours(s) and s.get(  # noqa: E731
            "state") in ("receiving", "failed", "active")
        first = None
        deadline = time.monotonic() + (timeout if resume or wait_s > 0 else 0.0)
        while True:  # re-offer every 2 s: the gateway may still be (re)connecting
            c.wait_acked(c.publish(f"{root}/model/offer", json.dumps(offer).encode(), 1))
            left = deadline - time.monotonic()
            if left <= 0:
                break
            first = c.wait_state(answered, min(2.0, left))
            if first is not None:
                break
        if resume or wait_s > 0:
            if first is None:
                raise PushError(f"the gateway did not answer the offer on {root}/model/state "
                                f"within {timeout:g} s")
            if first["state"] != "receiving":
                return PushResult(first, 0, chunks)
            if resume:
                todo = expand(first.get("missing") or [])
        log(f"offer {offer_id}: {man['name']} {version}, {len(data)} bytes in {chunks} "
            f"chunks of {chunk_size}; sending {len(todo)}")
        pending: list[Any] = []
        for i, n in enumerate(todo):
            part = data[n * chunk_size:(n + 1) * chunk_size]
            pending.append(c.publish(f"{root}/model/chunk/{version}/{n}", part, qos))
            if qos and len(pending) >= inflight:
                c.wait_acked(pending.pop(0))
            if (i + 1) % 100 == 0:
                log(f"  {i + 1}/{len(todo)} chunks")
        for info in pending:
            if qos:
                c.wait_acked(info)
        if wait_s <= 0:
            return PushResult(None, len(todo), chunks)
        final = c.wait_state(lambda s: ours(s) and s.get("state") in ("active", "failed"),
                             wait_s)
        if final is None:
            raise PushError(f"no final model/state within {wait_s:g} s")
        return PushResult(final, len(todo), chunks)
    finally:
        c.close()
