"""Model store, pure parts: offers, staging, verification, pointer, rollback, watch dir."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import export.signing
from agent import signing
from agent.config import ChannelConfig, StreamConfig, config_from_dict
from agent.errors import ConfigError, ModelUpdateError, Reason
from agent.model_store import (
    CONFIG,
    ModelStore,
    Offer,
    mark_drop,
    parse_offer,
    ready_drops,
    verify_model,
)
from agent.model_updates import WatchedModel
from agent.onnx_scorer import OnnxModel
from agent.signing import KeyRing
from tests.agent.model_update_helpers import (
    bad_golden_blob,
    keypair,
    manifest,
    model_blob,
    write_model,
)

STREAMS = (StreamConfig("line1", (ChannelConfig("temp"), ChannelConfig("vib"))),
           StreamConfig("pump", (ChannelConfig("t"), ChannelConfig("rpm"))))
LIMITS = {"max_bytes": 1 << 20, "max_chunks": 100, "max_chunk_bytes": 4096}


def load(data: bytes, source: str) -> OnnxModel:
    return OnnxModel(data, providers=("cpu",), verify_golden=False, source=source)


def verify(blob: bytes, man: dict[str, Any], ring: KeyRing, require_signed: bool = True,
           streams: tuple[StreamConfig, ...] = STREAMS) -> Any:
    return verify_model(blob, man, keys=ring, require_signed=require_signed,
                        max_bytes=1 << 20, streams=streams, load=load)


def reason_of(fn: Any, *args: Any, **kw: Any) -> Reason:
    with pytest.raises(ModelUpdateError) as err:
        fn(*args, **kw)
    return err.value.reason


def offer(blob: bytes, man: dict[str, Any], chunk: int = 1000) -> bytes:
    return json.dumps({"offer_id": "o1", "manifest": man, "chunks": -(-len(blob) // chunk),
                       "chunk_size": chunk}).encode()


def test_one_canonical_bytes_definition() -> None:
    assert export.signing.canonical_bytes is signing.canonical_bytes


def test_offer_limits(tmp_path: Path) -> None:
    blob = model_blob()
    man = manifest(blob, None)
    assert parse_offer(offer(blob, man), **LIMITS).chunks == -(-len(blob) // 1000)
    assert reason_of(parse_offer, b"{nope", **LIMITS) is Reason.BAD_OFFER
    big = dict(LIMITS, max_bytes=1024)
    assert reason_of(parse_offer, offer(blob, man), **big) is Reason.TOO_LARGE
    few = dict(LIMITS, max_chunks=2)
    assert reason_of(parse_offer, offer(blob, man, 100), **few) is Reason.TOO_MANY_CHUNKS
    assert reason_of(parse_offer, offer(blob, man, 8192), **LIMITS) is Reason.BAD_OFFER
    wrong = json.loads(offer(blob, man))
    wrong["chunks"] += 1
    assert reason_of(parse_offer, json.dumps(wrong).encode(), **LIMITS) is Reason.BAD_OFFER
    for bad in ({"name": "../x"}, {"version": "1"}, {"sha256": "zz"}, {"size": -1}):
        body = offer(blob, dict(man, **bad))
        assert reason_of(parse_offer, body, **LIMITS) is Reason.BAD_MANIFEST, bad


def test_chunks_out_of_order_duplicate_and_resumed(tmp_path: Path) -> None:
    blob = model_blob()
    store = ModelStore(tmp_path / "m")
    off = parse_offer(offer(blob, manifest(blob, None), 500), **LIMITS)
    st = store.stage(off)
    parts = [blob[i:i + 500] for i in range(0, len(blob), 500)]
    order = list(reversed(range(len(parts))))
    for n in order[:3]:
        assert st.put(n, parts[n])
    assert not st.put(order[0], parts[order[0]])  # duplicate
    assert reason_of(st.put, 0, parts[0][:-1]) is Reason.BAD_CHUNK
    assert reason_of(st.put, len(parts), b"x") is Reason.BAD_CHUNK
    assert st.missing() == sorted(order[3:]) and not st.complete
    # "restart": a new store object finds the offer and the chunks on disk
    again = ModelStore(tmp_path / "m").resume(off.version)
    assert again is not None and again.missing() == st.missing()
    for n in again.missing():
        again.put(n, parts[n])
    assert again.complete and again.assemble() == blob
    # the same offer again resumes; another model replaces the staging
    assert store.stage(off).complete
    other = parse_offer(offer(model_blob("1.1.0"), manifest(model_blob("1.1.0"), None), 500),
                        **LIMITS)
    assert store.stage(other).have == set()
    assert store.resume(off.version) is None


def test_verification_reasons(tmp_path: Path) -> None:
    key, pub = keypair(tmp_path)
    stranger, _ = keypair(tmp_path, "stranger")
    ring = KeyRing.from_files([pub])
    blob = model_blob()
    good = manifest(blob, key)
    v = verify(blob, good, ring)
    assert v.key_id == good["key_id"] and v.model.sha256 == good["sha256"]
    tampered = bytearray(blob)
    tampered[len(blob) // 2] ^= 0x01
    assert reason_of(verify, bytes(tampered), good, ring) is Reason.SHA256_MISMATCH
    assert reason_of(verify, blob[:-1], good, ring) is Reason.SIZE_MISMATCH
    assert reason_of(verify, blob, manifest(blob, stranger), ring) is Reason.UNKNOWN_KEY
    forged = dict(good, targets=["pump"])
    assert reason_of(verify, blob, forged, ring) is Reason.BAD_SIGNATURE
    assert reason_of(verify, blob, manifest(blob, None), ring) is Reason.UNSIGNED
    assert verify(blob, manifest(blob, None), ring, require_signed=False).key_id is None
    foreign = model_blob(features=("a", "b"))
    assert reason_of(verify, foreign, manifest(foreign, key), ring) is Reason.FEATURES_MISMATCH
    assert reason_of(verify, blob, manifest(blob, key, targets=("pump",)), ring
                     ) is Reason.FEATURES_MISMATCH
    golden = bad_golden_blob("1.3.0")
    assert reason_of(verify, golden, manifest(golden, key), ring) is Reason.GOLDEN_MISMATCH
    renamed = manifest(blob, key, version="9.9.9")
    assert reason_of(verify, blob, renamed, ring) is Reason.MANIFEST_MISMATCH
    junk = b"not a model at all" * 10
    junk_man = manifest(blob, key, sha256=hashlib.sha256(junk).hexdigest(), size=len(junk))
    assert reason_of(verify, junk, junk_man, ring) is Reason.LOAD_FAILED


def test_activate_keeps_n_and_rolls_back_to_the_configured_model(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, keep=2)
    shas = [store.save(model_blob(f"1.{i}.0"), {"i": i}) for i in range(4)]
    assert store.pointer().current is None
    for i, sha in enumerate(shas):
        p = store.activate(sha, float(i))
    assert p.current == shas[3] and p.history == (shas[2], shas[1])
    assert not store.has(shas[0])  # pruned: beyond keep
    assert store.activate(shas[3], 9.0) == p  # re-activating the active model is a no-op
    assert store.rollback(10.0).current == shas[2]
    assert not store.has(shas[3])  # the rolled-back model is gone
    assert store.rollback(11.0).current == shas[1]
    assert reason_of(store.rollback, 12.0) is Reason.NOTHING_TO_ROLL_BACK
    fresh = ModelStore(tmp_path / "b", keep=1)
    sha = fresh.save(model_blob(), {})
    assert fresh.activate(sha, 0.0).history == (CONFIG,)
    assert fresh.rollback(1.0).current is None  # back to detectors.onnx
    assert not list(tmp_path.glob("**/.*.tmp"))
    (tmp_path / "active.json").write_text("{broken")
    assert store.pointer().current is None


def test_watch_dir_waits_for_a_complete_copy(tmp_path: Path) -> None:
    blob = model_blob()
    man = manifest(blob, None)
    path = write_model(tmp_path, "m.onnx", blob[:100], man)  # copy in progress
    assert ready_drops(tmp_path) == []
    path.write_bytes(blob)
    (tmp_path / "junk.onnx").write_bytes(b"x")
    (tmp_path / "junk.onnx.manifest.json").write_text("{")
    drops = ready_drops(tmp_path)
    assert [(p.name, m is None) for p, m in drops] == [("junk.onnx", True), ("m.onnx", False)]
    mark_drop(path, True)
    assert (tmp_path / "m.onnx.done").exists() and ready_drops(tmp_path)[0][0].name == "junk.onnx"


def test_watched_model_counts_errors_and_still_decides() -> None:
    model = WatchedModel(load(model_blob(), "t"), clock=lambda: 42.0)
    window = np.zeros((8, 2))
    assert model.score_window(window).score >= 0 and model.first_scored == 42.0

    class Broken:
        def run(self, *_a: object) -> None:
            raise RuntimeError("device lost")

    model._session = Broken()  # type: ignore[assignment]
    out = model.score_window(window)
    assert out.score == 0.0 and model.errors == 1 and model.windows == 1


def test_offer_round_trip() -> None:
    off = Offer({"version": "1.0.0", "sha256": "a" * 64, "size": 10}, 3, 4, "x")
    assert [off.chunk_len(n) for n in range(3)] == [4, 4, 2]


@pytest.mark.parametrize(
    ("models", "key", "reason"),
    [
        ({"dir": "m"}, "models.public_keys", "at least one"),
        ({"dir": "m", "require_signed": False, "keep": -1}, "models.keep", "0..100"),
        ({"watch_dir": "drop"}, "models.watch_dir", "needs models.dir"),
        ({"dir": "m", "require_signed": False, "max_chunk_bytes": 10}, "models.max_chunk_bytes",
         "256.."),
        ({"dir": "m", "require_signed": False, "health": {"window_s": 0}},
         "models.health.window_s", "> 0"),
    ],
)
def test_models_config_errors(models: dict[str, Any], key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict({"models": models})
    assert err.value.key == key and reason in err.value.reason


def test_missing_public_key_file_stops_the_agent(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"models.public_keys\[0\]"):
        KeyRing.from_files([tmp_path / "nope.pem"])
