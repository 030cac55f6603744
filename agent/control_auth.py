"""Signed control messages: commands and ``config/desired`` with a signature, a timestamp
and a nonce (``docs/security.md``).

A signed message is the usual JSON object plus an ``auth`` member::

    {"id": 7, "args": {}, "auth": {"alg": "hmac-sha256", "key_id": "ops",
                                   "ts": 1700000000.0, "nonce": "4f1c...", "sig": "base64"}}

The signature covers :func:`signed_bytes`: the topic (so a message signed for one gateway
or command cannot be replayed on another), the body without ``auth``, ``alg``, ``key_id``,
``ts`` and ``nonce``, as canonical JSON. ``alg`` is ``hmac-sha256`` (a shared secret,
``control.hmac_keys``) or ``ed25519`` (``control.public_keys``, the same PEM format and
key ids as model signing). The guard (:class:`ControlGuard`, pure: ``now`` comes in)
refuses, with the reply code and a counted reason:

* 401 ``unsigned`` (when ``control.require_signed``), ``bad_auth`` (malformed ``auth``),
  ``unknown_key``, ``bad_signature``;
* 403 ``stale`` (``ts`` more than ``control.max_skew_s`` from the gateway clock),
  ``replay`` (a nonce already seen within that window), ``nonce_cache_full``
  (more than ``control.nonce_cache`` signed messages within the window: refused rather
  than forgetting a nonce that could then be replayed);
* 413 ``too_large`` (a body over the caller's limit, refused before it is parsed, signed
  or not);
* 503 ``nonce_store_failed`` (the nonce file could not be written: refused, since the
  nonce would be forgotten by a restart).

With ``nonce_file`` (``control.nonce_file``) the nonces seen within the skew window are
kept on disk: rewritten atomically (temporary file, fsync, rename) before a signed
message is acted on, loaded at start, so a message replayed right after a restart is
still refused. The file holds at most ``nonce_cache`` entries. When it exists but cannot
be read, every signed message with a ``ts`` before the load is refused as ``replay``
(nothing from before the restart can be trusted to be new).

>>> guard = ControlGuard(hmac_keys={"ops": b"k" * 32}, require_signed=True)
>>> msg = sign_message("edge/v1/s/g/cmd/ping", {"id": 1}, key_id="ops", secret=b"k" * 32,
...                    now=1000.0, nonce="nonce-0001")
>>> guard.check("edge/v1/s/g/cmd/ping", msg, now=1001.0).ok
True
>>> guard.check("edge/v1/s/g/cmd/ping", msg, now=1002.0).reason
'replay'
>>> guard.check("edge/v1/s/g/cmd/rebaseline", msg, now=1002.0).reason
'bad_signature'
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import math
import os
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from agent.jsonsafe import loads as loads_json
from agent.keyfiles import read_secret
from agent.signing import KeyRing

log = logging.getLogger(__name__)

HMAC = "hmac-sha256"
ED25519 = "ed25519"
_MAX_NONCE = 128
_FILE_ENTRY_BYTES = _MAX_NONCE + 40  # one '"nonce": ts,' entry of the nonce file, at most
_AUTH_KEYS = {"alg", "key_id", "ts", "nonce", "sig"}


def signed_bytes(topic: str, body: Mapping[str, Any], auth: Mapping[str, Any]) -> bytes:
    """What is signed: topic, body without ``auth``, and the auth fields but ``sig``."""
    doc = {"topic": topic, "body": {k: v for k, v in body.items() if k != "auth"},
           **{k: auth.get(k) for k in ("alg", "key_id", "ts", "nonce")}}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def sign_message(topic: str, body: Mapping[str, Any], *, key_id: str, now: float, nonce: str,
                 secret: bytes | None = None, private_key: Ed25519PrivateKey | None = None
                 ) -> bytes:
    """The JSON bytes of ``body`` signed for ``topic`` (sender side, tools and tests)."""
    auth: dict[str, Any] = {"alg": HMAC if secret is not None else ED25519, "key_id": key_id,
                            "ts": now, "nonce": nonce}
    data = signed_bytes(topic, body, auth)
    if secret is not None:
        sig = hmac.new(secret, data, hashlib.sha256).digest()
    elif private_key is not None:
        sig = private_key.sign(data)
    else:
        raise ValueError("give secret (HMAC) or private_key (Ed25519)")
    auth["sig"] = base64.b64encode(sig).decode()
    return json.dumps({**body, "auth": auth}, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Verdict:
    """The guard's answer: ``payload`` (without ``auth``) to act on, or a refusal."""

    payload: bytes
    code: int = 200
    reason: str | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.code == 200


class ControlGuard:
    """Checks signatures, timestamps and nonces of control messages; counts refusals."""

    def __init__(self, *, hmac_keys: Mapping[str, bytes] | None = None,
                 public_keys: Iterable[Ed25519PublicKey] = (), require_signed: bool = False,
                 max_skew_s: float = 300.0, nonce_cache: int = 10_000,
                 nonce_file: Path | None = None, now: float | None = None) -> None:
        self.hmac_keys = dict(hmac_keys or {})
        self.ring = KeyRing(public_keys)
        self.require_signed = require_signed
        self.max_skew_s = max_skew_s
        self.nonce_cache = nonce_cache
        self.nonce_file = nonce_file
        self.accepted = 0
        self.rejected: Counter[str] = Counter()
        self._nonces: OrderedDict[str, float] = OrderedDict()  # nonce -> ts, oldest first
        self._not_before = -math.inf  # signed ts at or before this: refused (state lost)
        if nonce_file is not None:
            self._load(nonce_file, 0.0 if now is None else now)

    @classmethod
    def from_config(cls, control: Any, resolve: Callable[[str], Path]) -> ControlGuard:
        """Load ``control.hmac_keys`` (``[{id, file}]``) and ``control.public_keys``."""
        secrets = {}
        for i, k in enumerate(control.hmac_keys):
            secrets[k.id] = read_secret(resolve(k.file), f"control.hmac_keys[{i}].file")
        pubs = KeyRing.from_files([resolve(p) for p in control.public_keys],
                                  "control.public_keys")
        return cls(hmac_keys=secrets, public_keys=pubs.keys.values(),
                   require_signed=control.require_signed, max_skew_s=control.max_skew_s,
                   nonce_cache=control.nonce_cache,
                   nonce_file=resolve(control.nonce_file) if control.nonce_file else None,
                   now=time.time())

    # ------------------------------------------------------------------ nonce file
    def _load(self, path: Path, now: float) -> None:
        """Nonces of the previous run still inside the skew window (see module docstring)."""
        if not path.exists():
            return
        try:
            if path.stat().st_size > self.nonce_cache * _FILE_ENTRY_BYTES + 64:
                raise ValueError(f"larger than {self.nonce_cache} entries can be")
            doc = loads_json(path.read_bytes())
            entries = doc.get("nonces") if isinstance(doc, dict) else None
            if not isinstance(entries, dict):
                raise ValueError("no 'nonces' object")
            for nonce, ts in entries.items():
                if (isinstance(ts, bool) or not isinstance(ts, int | float)
                        or not math.isfinite(ts)):
                    raise ValueError(f"bad timestamp for nonce {str(nonce)[:16]}")
                if abs(now - ts) <= self.max_skew_s:
                    self._nonces[nonce] = float(ts)
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            self._nonces.clear()
            self._not_before = now
            log.error("control.nonce_file %s unreadable (%s): signed messages dated before "
                      "now are refused as replays", path, exc)
            return
        while len(self._nonces) > self.nonce_cache:
            self._nonces.popitem(last=False)
        log.info("control: %d nonces of the last %g s restored from %s", len(self._nonces),
                 self.max_skew_s, path)

    def _save(self) -> None:
        """Rewrite the nonce file atomically (raises OSError)."""
        path = self.nonce_file
        assert path is not None
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        data = json.dumps({"v": 1, "nonces": dict(self._nonces)}, separators=(",", ":"))
        with open(tmp, "w", encoding="ascii") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def stats(self) -> dict[str, Any]:
        return {"require_signed": self.require_signed, "auth_accepted": self.accepted,
                "auth_rejected": dict(sorted(self.rejected.items()))}

    def _refuse(self, payload: bytes, code: int, reason: str, detail: str) -> Verdict:
        if reason not in self.rejected:
            log.warning("control message refused (%s): %s; further '%s' are only counted",
                        reason, detail, reason)
        self.rejected[reason] += 1
        return Verdict(payload, code, reason, detail)

    def check(self, topic: str, payload: bytes, now: float, *, limit: int | None = None,
              size: int | None = None) -> Verdict:
        """Verify a command or ``config/desired`` payload received on ``topic``.

        ``size`` is the received body's length when the caller already dropped the bytes
        of an oversized one (default ``len(payload)``); above ``limit`` it is refused
        before anything is parsed."""
        size = len(payload) if size is None else size
        if limit is not None and size > limit:
            return self._refuse(b"", 413, "too_large",
                                f"{topic}: body of {size} bytes, limit {limit}")
        try:
            body = loads_json(payload) if payload.strip() else {}
        except ValueError:
            body = None
        auth = body.get("auth") if isinstance(body, dict) else None
        if auth is None:
            if self.require_signed:
                return self._refuse(payload, 401, "unsigned",
                                    f"{topic}: unsigned (control.require_signed is true)")
            return Verdict(payload)  # unparseable bodies are the parsers' business
        assert isinstance(body, dict)
        if not isinstance(auth, dict) or set(auth) != _AUTH_KEYS:
            return self._refuse(payload, 401, "bad_auth",
                                f"{topic}: 'auth' must hold exactly {sorted(_AUTH_KEYS)}")
        alg, kid, ts, nonce, sig = (auth[k] for k in ("alg", "key_id", "ts", "nonce", "sig"))
        if (isinstance(ts, bool) or not isinstance(ts, int | float) or ts != ts
                or not isinstance(nonce, str) or not 8 <= len(nonce) <= _MAX_NONCE
                or not isinstance(kid, str) or not isinstance(sig, str)):
            return self._refuse(payload, 401, "bad_auth", f"{topic}: malformed auth fields "
                                "(ts number, nonce 8..128 characters, key_id and sig strings)")
        try:
            raw_sig = base64.b64decode(sig, validate=True)
            data = signed_bytes(topic, body, auth)
        except ValueError:
            return self._refuse(payload, 401, "bad_auth", f"{topic}: sig is not base64")
        if alg == HMAC and kid in self.hmac_keys:
            good = hmac.compare_digest(
                hmac.new(self.hmac_keys[kid], data, hashlib.sha256).digest(), raw_sig)
        elif alg == ED25519 and kid in self.ring.keys:
            try:
                self.ring.keys[kid].verify(raw_sig, data)
                good = True
            except InvalidSignature:
                good = False
        else:
            return self._refuse(payload, 401, "unknown_key",
                                f"{topic}: no {alg!r} key with id {kid!r}"[:200])
        if not good:
            return self._refuse(payload, 401, "bad_signature",
                                f"{topic}: signature does not verify with key {kid}")
        if abs(now - float(ts)) > self.max_skew_s:
            return self._refuse(payload, 403, "stale", f"{topic}: ts {ts} is "
                                f"{now - float(ts):+.0f} s from the gateway clock "
                                f"(control.max_skew_s {self.max_skew_s:g})")
        self._expire(now)
        if nonce in self._nonces:
            return self._refuse(payload, 403, "replay", f"{topic}: nonce {nonce[:16]} seen")
        if float(ts) <= self._not_before:
            return self._refuse(payload, 403, "replay", f"{topic}: ts {ts} is before the "
                                "unreadable nonce file was loaded")
        if len(self._nonces) >= self.nonce_cache:
            return self._refuse(payload, 403, "nonce_cache_full",
                                f"{topic}: {self.nonce_cache} signed messages within "
                                f"{self.max_skew_s:g} s")
        self._nonces[nonce] = float(ts)
        if self.nonce_file is not None:
            try:
                self._save()
            except OSError as exc:  # kept in memory: a replay before a restart is refused
                return self._refuse(payload, 503, "nonce_store_failed",
                                    f"{topic}: cannot write {self.nonce_file}: {exc}")
        self.accepted += 1
        clean = {k: v for k, v in body.items() if k != "auth"}
        return Verdict(json.dumps(clean, separators=(",", ":")).encode())

    def _expire(self, now: float) -> None:
        """Forget nonces whose ``ts`` is out of the window (they fail ``stale`` anyway).

        Insertion order is not ts order, so scan from the oldest insert while expired."""
        for nonce, ts in list(self._nonces.items()):
            if abs(now - ts) > self.max_skew_s:
                del self._nonces[nonce]
            elif len(self._nonces) < self.nonce_cache:
                break

