"""The model store: staging, verification, the active model and the previous N. Files only.

Layout under ``models.dir``::

    staging/{version}/offer.json     the offer being received (manifest, chunk count/size)
    staging/{version}/chunks/{n}     one file per chunk received (written atomically)
    store/{sha256}.onnx              verified models: the active one and the previous N
    store/{sha256}.manifest.json
    active.json                      the pointer: {"current": sha256, "history": [...]}

A transfer survives a restart: the offer and every chunk already received are on disk,
so the sender only resends what :meth:`Staging.missing` lists. The pointer is replaced
atomically (write, fsync, rename, fsync of the directory), so after a crash it names
either the old or the new model, never half of one. ``history`` lists the models to roll
back to, newest first; :data:`CONFIG` stands for "the model of ``detectors.onnx``" (or no
model), so the first update can be rolled back too.

Every refusal is a :class:`~agent.errors.ModelUpdateError` whose ``reason`` names the
check that failed (:class:`~agent.errors.Reason`). No MQTT and no clock here: callers
pass ``now`` where it matters.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent.config import StreamConfig
from agent.errors import ModelLoadError, ModelMetadataError, ModelUpdateError, Reason
from agent.jsonsafe import loads as loads_json
from agent.model_meta import NEXT_EVENT
from agent.onnx_scorer import GOLDEN_ATOL, GOLDEN_RTOL, OnnxModel
from agent.signing import KeyRing, is_signed

log = logging.getLogger(__name__)

CONFIG = "config"  # history entry: the model configured in detectors.onnx (or none)
_SHA = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_SEMVER = re.compile(r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$")
_OFFER_ID = re.compile(r"^[A-Za-z0-9_.:-]{0,64}$")


def write_atomic(path: Path, data: bytes) -> None:
    """Write, fsync, rename over ``path``, fsync the directory."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ranges(numbers: Sequence[int]) -> list[list[int]]:
    """Compress sorted chunk numbers into inclusive ranges.

    >>> ranges([0, 1, 2, 5, 7, 8])
    [[0, 2], [5, 5], [7, 8]]
    """
    out: list[list[int]] = []
    for n in numbers:
        if out and n == out[-1][1] + 1:
            out[-1][1] = n
        else:
            out.append([n, n])
    return out


# --------------------------------------------------------------------------- manifest, offer


def check_manifest(manifest: Any, max_bytes: int) -> dict[str, Any]:
    """The fields every manifest needs (signed or not); raise ``bad_manifest``/``too_large``."""
    def bad(why: str) -> ModelUpdateError:
        return ModelUpdateError(Reason.BAD_MANIFEST, why)

    if not isinstance(manifest, dict):
        raise bad("the manifest must be a JSON object")
    name, version = manifest.get("name"), manifest.get("version")
    if not isinstance(name, str) or not _NAME.match(name):
        raise bad(f"name must match {_NAME.pattern}, got {name!r}")
    if not isinstance(version, str) or not _SEMVER.match(version):
        raise bad(f"version must be a semantic version, got {version!r}")
    if not isinstance(manifest.get("sha256"), str) or not _SHA.match(manifest["sha256"]):
        raise bad("sha256 must be 64 lowercase hex digits")
    size = manifest.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise bad(f"size must be a positive integer, got {size!r}")
    if size > max_bytes:
        raise ModelUpdateError(Reason.TOO_LARGE, f"{size} bytes > models.max_bytes {max_bytes}")
    targets = manifest.get("targets", [])
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        raise bad("targets must be a list of stream ids")
    return manifest


@dataclass(frozen=True)
class Offer:
    """A ``model/offer``: the manifest and how the file is cut into chunks."""

    manifest: dict[str, Any]
    chunks: int
    chunk_size: int
    offer_id: str = ""

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def sha256(self) -> str:
        return str(self.manifest["sha256"])

    @property
    def size(self) -> int:
        return int(self.manifest["size"])

    def chunk_len(self, n: int) -> int:
        return self.chunk_size if n < self.chunks - 1 else self.size - n * self.chunk_size

    def to_json(self) -> bytes:
        return json.dumps({"offer_id": self.offer_id, "manifest": self.manifest,
                           "chunks": self.chunks, "chunk_size": self.chunk_size},
                          sort_keys=True).encode()


def parse_offer(payload: bytes, *, max_bytes: int, max_chunks: int,
                max_chunk_bytes: int) -> Offer:
    """Validate an offer against the limits; raise :class:`ModelUpdateError`."""
    try:
        body = loads_json(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelUpdateError(Reason.BAD_OFFER, f"not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ModelUpdateError(Reason.BAD_OFFER, "the offer must be a JSON object")
    manifest = check_manifest(body.get("manifest"), max_bytes)
    chunks, size = body.get("chunks"), body.get("chunk_size")
    offer_id = body.get("offer_id", "")
    if not isinstance(offer_id, str) or not _OFFER_ID.match(offer_id):
        raise ModelUpdateError(Reason.BAD_OFFER, "offer_id must match " + _OFFER_ID.pattern)
    for key, v in (("chunks", chunks), ("chunk_size", size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ModelUpdateError(Reason.BAD_OFFER, f"{key} must be a positive integer")
    assert isinstance(chunks, int) and isinstance(size, int)
    if chunks > max_chunks:
        raise ModelUpdateError(Reason.TOO_MANY_CHUNKS,
                               f"{chunks} chunks > models.max_chunks {max_chunks}")
    if size > max_chunk_bytes:
        raise ModelUpdateError(Reason.BAD_OFFER,
                               f"chunk_size {size} > models.max_chunk_bytes {max_chunk_bytes}")
    if chunks != -(-manifest["size"] // size):
        raise ModelUpdateError(Reason.BAD_OFFER, f"{chunks} chunks of {size} bytes cannot "
                                                 f"hold {manifest['size']} bytes exactly")
    return Offer(manifest, chunks, size, offer_id)


# --------------------------------------------------------------------------- staging


class Staging:
    """One transfer being received: out-of-order, duplicate and resumed chunks are fine."""

    def __init__(self, path: Path, offer: Offer) -> None:
        self.path = path
        self.offer = offer
        self._chunks = path / "chunks"
        self._chunks.mkdir(parents=True, exist_ok=True)
        self.have = {int(p.name) for p in self._chunks.iterdir() if p.name.isdigit()}
        self.duplicates = 0

    @classmethod
    def open(cls, root: Path, offer: Offer) -> Staging:
        """Resume the staging of the same model, else start afresh (other transfers go)."""
        path = root / offer.version
        old = load_offer(path)
        if old is None or old.sha256 != offer.sha256 or old.chunk_size != offer.chunk_size:
            shutil.rmtree(path, ignore_errors=True)
        for other in root.iterdir():  # one transfer at a time: the newest offer wins
            if other != path:
                shutil.rmtree(other, ignore_errors=True)
        path.mkdir(parents=True, exist_ok=True)
        write_atomic(path / "offer.json", offer.to_json())
        return cls(path, offer)

    def put(self, n: int, data: bytes) -> bool:
        """Store chunk ``n``; False for a duplicate. Raise ``bad_chunk`` on a misfit."""
        if not 0 <= n < self.offer.chunks:
            raise ModelUpdateError(Reason.BAD_CHUNK,
                                   f"chunk {n} outside 0..{self.offer.chunks - 1}")
        if len(data) != self.offer.chunk_len(n):
            raise ModelUpdateError(Reason.BAD_CHUNK, f"chunk {n} has {len(data)} bytes, "
                                                     f"expected {self.offer.chunk_len(n)}")
        if n in self.have:
            self.duplicates += 1
            return False
        write_atomic(self._chunks / str(n), data)
        self.have.add(n)
        return True

    def missing(self) -> list[int]:
        return [n for n in range(self.offer.chunks) if n not in self.have]

    @property
    def complete(self) -> bool:
        return len(self.have) == self.offer.chunks

    def assemble(self) -> bytes:
        return b"".join((self._chunks / str(n)).read_bytes() for n in range(self.offer.chunks))

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def load_offer(path: Path) -> Offer | None:
    try:
        body = json.loads((path / "offer.json").read_bytes())
        return Offer(body["manifest"], int(body["chunks"]), int(body["chunk_size"]),
                     str(body.get("offer_id", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


# --------------------------------------------------------------------------- verification


@dataclass(frozen=True)
class Verified:
    """A model that passed every check, with the shadow session that checked it."""

    model: OnnxModel
    manifest: dict[str, Any]
    data: bytes
    key_id: str | None


def check_signature(manifest: Mapping[str, Any], keys: KeyRing, require_signed: bool
                    ) -> str | None:
    """The key id that signed the manifest, None for an allowed unsigned one."""
    if not is_signed(manifest) and not require_signed:
        log.warning("accepting unsigned model %s %s (models.require_signed is false)",
                    manifest.get("name"), manifest.get("version"))
        return None
    return keys.verify(manifest)


def _check_golden(model: OnnxModel, manifest: Mapping[str, Any]) -> None:
    if not model.meta.golden:
        raise ModelUpdateError(Reason.NO_GOLDEN, "the model embeds no golden vectors")
    try:
        model.check_golden()
        for i, g in enumerate(manifest.get("golden") or ()):
            got = model.score_window(np.asarray(g["window"], dtype=np.float64)).raw
            if not np.isclose(got, float(g["raw_score"]), rtol=GOLDEN_RTOL, atol=GOLDEN_ATOL):
                raise ModelLoadError(f"manifest golden vector {i} gives raw error {got:.6g}, "
                                     f"expected {float(g['raw_score']):.6g}")
    except ModelLoadError as exc:
        raise ModelUpdateError(Reason.GOLDEN_MISMATCH, str(exc)) from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelUpdateError(Reason.BAD_MANIFEST, f"manifest golden vectors: {exc!r}"
                               ) from exc


def check_fits(model: OnnxModel, manifest: Mapping[str, Any],
               streams: Sequence[StreamConfig]) -> list[str]:
    """Streams the model will score; raise ``features_mismatch`` when it fits none (or
    not every stream the manifest targets)."""
    feats = set(model.features)
    fits = [s.id for s in streams if feats <= set(s.channel_names)]
    targets = list(manifest.get("targets") or ())
    unfit = [t for t in targets if t not in fits]
    if unfit:
        raise ModelUpdateError(Reason.FEATURES_MISMATCH,
                               f"features {sorted(feats)} do not fit target streams {unfit}")
    if not fits:
        raise ModelUpdateError(
            Reason.FEATURES_MISMATCH,
            f"features {list(model.features)} fit no configured stream "
            f"({ {s.id: list(s.channel_names) for s in streams} })")
    return fits


def verify_model(data: bytes, manifest: Mapping[str, Any], *, keys: KeyRing,
                 require_signed: bool, max_bytes: int, streams: Sequence[StreamConfig],
                 load: Callable[[bytes, str], OnnxModel],
                 event_fit: Callable[[Any, Mapping[str, Any]], object] | None = None
                 ) -> Verified:
    """Size, SHA-256, signature, ONNX load in a shadow session, fit, golden vectors.

    ``load(data, source)`` builds the shadow :class:`OnnxModel` (or, for a ``next_event``
    model, a :class:`~agent.events.sequence.NextEventModel`) without golden checks (they
    are run here, so their failure gets its own reason). A ``next_event`` model is fitted
    to the event sources by ``event_fit(model, manifest)`` instead of to the streams.
    """
    m = check_manifest(dict(manifest), max_bytes)
    key = check_signature(m, keys, require_signed)
    if len(data) != m["size"]:
        raise ModelUpdateError(Reason.SIZE_MISMATCH, f"{len(data)} bytes, manifest says "
                                                     f"{m['size']}")
    sha = hashlib.sha256(data).hexdigest()
    if sha != m["sha256"]:
        raise ModelUpdateError(Reason.SHA256_MISMATCH, f"sha256 {sha[:16]}... != manifest "
                                                       f"{m['sha256'][:16]}...")
    if data[:1] != b"\x08" or data[4:8] == b"ORTM":  # ModelProto starts with ir_version
        raise ModelUpdateError(Reason.LOAD_FAILED, "not an ONNX model (protobuf) file")
    try:
        model = load(data, f"{m['name']} {m['version']}")
    except ModelMetadataError as exc:
        raise ModelUpdateError(Reason.BAD_METADATA, str(exc)) from exc
    except ModelLoadError as exc:
        raise ModelUpdateError(Reason.LOAD_FAILED, str(exc)) from exc
    if (model.meta.name, model.meta.version) != (m["name"], m["version"]):
        raise ModelUpdateError(
            Reason.MANIFEST_MISMATCH, f"manifest says {m['name']} {m['version']}, the model "
                                      f"{model.meta.name} {model.meta.version}")
    if model.meta.kind == NEXT_EVENT:
        if event_fit is None:
            raise ModelUpdateError(Reason.FEATURES_MISMATCH, "next_event models are not "
                                                             "accepted here")
        event_fit(model, m)
    else:
        check_fits(model, m, streams)
    _check_golden(model, m)
    return Verified(model, m, data, key)


# --------------------------------------------------------------------------- the store


@dataclass(frozen=True)
class Pointer:
    """``active.json``: the active model (None = the configured one) and the history."""

    current: str | None = None
    history: tuple[str, ...] = ()


class ModelStore:
    """Verified models on disk, the active pointer, rollback and pruning."""

    def __init__(self, root: str | Path, keep: int = 3) -> None:
        self.root = Path(root)
        self.keep = keep
        self.staging_dir = self.root / "staging"
        self.models_dir = self.root / "store"
        self.pointer_path = self.root / "active.json"
        try:
            self.staging_dir.mkdir(parents=True, exist_ok=True)
            self.models_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ModelUpdateError(Reason.STORE_FAILED, f"{self.root}: {exc}") from exc

    # ---------------------------------------------------------------- staging
    def stage(self, offer: Offer) -> Staging:
        return Staging.open(self.staging_dir, offer)

    def resume(self, version: str) -> Staging | None:
        """The staging of ``version`` left by an earlier run, if any."""
        path = self.staging_dir / version
        offer = load_offer(path) if _SEMVER.match(version) else None
        return Staging(path, offer) if offer is not None else None

    # ---------------------------------------------------------------- models
    def paths(self, sha: str) -> tuple[Path, Path]:
        if not _SHA.match(sha):
            raise ModelUpdateError(Reason.STORE_FAILED, f"not a sha256: {sha!r}")
        return self.models_dir / f"{sha}.onnx", self.models_dir / f"{sha}.manifest.json"

    def save(self, data: bytes, manifest: Mapping[str, Any]) -> str:
        sha = hashlib.sha256(data).hexdigest()
        model_path, manifest_path = self.paths(sha)
        write_atomic(model_path, data)
        write_atomic(manifest_path, json.dumps(dict(manifest), sort_keys=True).encode())
        return sha

    def load(self, sha: str) -> tuple[bytes, dict[str, Any]]:
        model_path, manifest_path = self.paths(sha)
        try:
            return model_path.read_bytes(), json.loads(manifest_path.read_bytes())
        except (OSError, ValueError) as exc:
            raise ModelUpdateError(Reason.STORE_FAILED, f"stored model {sha[:16]}: {exc}"
                                   ) from exc

    def has(self, sha: str) -> bool:
        return all(p.exists() for p in self.paths(sha))

    # ---------------------------------------------------------------- pointer
    def pointer(self) -> Pointer:
        try:
            raw = json.loads(self.pointer_path.read_bytes())
            cur = raw.get("current")
            return Pointer(str(cur) if cur else None, tuple(str(h) for h in raw["history"]))
        except FileNotFoundError:
            return Pointer()
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.error("model pointer %s unreadable, using the configured model: %s",
                      self.pointer_path, exc)
            return Pointer()

    def _write_pointer(self, p: Pointer, now: float) -> None:
        write_atomic(self.pointer_path, json.dumps(
            {"current": p.current, "history": list(p.history), "updated": now}).encode())

    def activate(self, sha: str, now: float) -> Pointer:
        """Make ``sha`` (already saved) the active model; keep ``keep`` previous ones."""
        old = self.pointer()
        if old.current == sha:
            return old
        prev = [old.current or CONFIG, *old.history]
        history = tuple(dict.fromkeys(h for h in prev if h != sha))[: self.keep]
        new = Pointer(sha, history)
        self._write_pointer(new, now)
        self.prune(new)
        return new

    def rollback(self, now: float) -> Pointer:
        """Return to the previous model; the rolled-back one is deleted."""
        old = self.pointer()
        if not old.history:
            raise ModelUpdateError(Reason.NOTHING_TO_ROLL_BACK, "no previous model is kept")
        target = old.history[0]
        new = Pointer(None if target == CONFIG else target, old.history[1:])
        self._write_pointer(new, now)
        self.prune(new)
        return new

    def prune(self, p: Pointer) -> None:
        keep = {h for h in (p.current, *p.history) if h and h != CONFIG}
        for f in self.models_dir.iterdir():
            if f.name.split(".", 1)[0] not in keep:
                f.unlink(missing_ok=True)


# --------------------------------------------------------------------------- watched directory


def manifest_for(model_path: Path) -> Path:
    return model_path.with_name(model_path.name + ".manifest.json")


def ready_drops(watch_dir: Path) -> list[tuple[Path, dict[str, Any] | None]]:
    """Model files dropped into ``watch_dir`` whose copy is complete.

    A drop is ``X.onnx`` plus ``X.onnx.manifest.json``; it is ready once the manifest
    parses and the model has the manifest's size (so a copy in progress waits). A
    manifest that does not parse yields ``(path, None)``.
    """
    out: list[tuple[Path, dict[str, Any] | None]] = []
    try:
        models = sorted(p for p in watch_dir.iterdir() if p.suffix == ".onnx" and p.is_file())
    except OSError:
        return out
    for p in models:
        mp = manifest_for(p)
        if not mp.exists():
            continue
        try:
            manifest = json.loads(mp.read_bytes())
        except (OSError, ValueError):
            out.append((p, None))
            continue
        size = manifest.get("size") if isinstance(manifest, dict) else None
        if isinstance(size, int) and p.stat().st_size != size:
            continue  # still being copied (or truncated: then it never becomes ready)
        out.append((p, manifest))
    return out


def mark_drop(model_path: Path, ok: bool) -> None:
    """Rename a processed drop to ``X.onnx.done`` / ``.failed`` so it is not taken twice."""
    suffix = ".done" if ok else ".failed"
    for p in (model_path, manifest_for(model_path)):
        if p.exists():
            os.replace(p, p.with_name(p.name + suffix))
