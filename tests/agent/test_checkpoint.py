"""The checkpoint file format: integrity checks and atomic writes (real files)."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from agent import checkpoint as ckpt
from agent._version import __version__
from agent.checkpoint import FORMAT_VERSION, MAGIC, load_checkpoint, save_checkpoint
from agent.errors import CheckpointError

FP = "f" * 64
STATE = {"a": np.arange(5.0), "b": [1, 2, 3], "c": {"nested": "yes"}}


def _save(tmp_path: Path, state=STATE) -> Path:
    path = tmp_path / "x.ckpt"
    save_checkpoint(path, state, FP)
    return path


def _split(blob: bytes) -> tuple[dict, bytes]:
    n = len(MAGIC)
    (hlen,) = struct.unpack(">I", blob[n : n + 4])
    return json.loads(blob[n + 4 : n + 4 + hlen]), blob[n + 4 + hlen :]


def _join(header: dict, payload: bytes) -> bytes:
    h = json.dumps(header, sort_keys=True).encode()
    return MAGIC + struct.pack(">I", len(h)) + h + payload


def test_round_trip(tmp_path: Path) -> None:
    path = _save(tmp_path)
    got = load_checkpoint(path, FP)
    assert np.array_equal(got["a"], STATE["a"]) and got["b"] == [1, 2, 3] and got["c"] == STATE["c"]
    header, payload = _split(path.read_bytes())
    assert header["format"] == FORMAT_VERSION and header["agent_version"] == __version__
    assert header["size"] == len(payload) and header["fingerprint"] == FP


def test_save_returns_the_size_and_creates_parent_dirs(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "x.ckpt"
    n = save_checkpoint(path, STATE, FP)
    assert n == path.stat().st_size
    assert not list(path.parent.glob("*.tmp"))


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b: b"NOTACKPT" + b[8:], "bad magic"),
        (lambda b: b"", "bad magic"),
        (lambda b: MAGIC + b"\x00\x00", "bad magic"),
        (lambda b: b[:20], "corrupt header"),  # truncated inside the header
        (lambda b: b[:-7], "payload corrupt"),  # truncated payload
        (lambda b: b + b"extra", "payload corrupt"),
        (lambda b: b[:-1] + bytes([b[-1] ^ 0x01]), "payload corrupt"),  # flipped payload byte
        (lambda b: MAGIC + struct.pack(">I", 4) + b"[1]x", "corrupt header"),  # not an object
    ],
    ids=["magic", "empty", "short", "trunc-header", "trunc-payload", "extra", "flip", "list"],
)
def test_damaged_files_raise_checkpoint_error_with_a_reason(tmp_path: Path, mutate, reason) -> None:
    path = _save(tmp_path)
    path.write_bytes(mutate(path.read_bytes()))
    with pytest.raises(CheckpointError, match=reason) as exc:
        load_checkpoint(path, FP)
    assert str(path) in str(exc.value)


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("format", FORMAT_VERSION + 1, "format"),
        ("format", None, "format"),
        ("agent_version", "0.0.0-old", "written by agent 0.0.0-old"),
        ("fingerprint", "0" * 64, "configuration changed"),
        ("sha256", "0" * 64, "payload corrupt"),
        ("size", 1, "payload corrupt"),
    ],
)
def test_header_mismatch_raises_checkpoint_error(tmp_path: Path, field, value, reason) -> None:
    path = _save(tmp_path)
    header, payload = _split(path.read_bytes())
    header[field] = value
    path.write_bytes(_join(header, payload))
    with pytest.raises(CheckpointError, match=reason):
        load_checkpoint(path, FP)


def test_other_fingerprint_is_rejected(tmp_path: Path) -> None:
    path = _save(tmp_path)
    with pytest.raises(CheckpointError, match="configuration changed"):
        load_checkpoint(path, "e" * 64)


def test_undecodable_payload_with_a_valid_hash_is_rejected(tmp_path: Path) -> None:
    import hashlib

    path = _save(tmp_path)
    header, _ = _split(path.read_bytes())
    payload = b"\x80\x05not a pickle"
    header.update(size=len(payload), sha256=hashlib.sha256(payload).hexdigest())
    path.write_bytes(_join(header, payload))
    with pytest.raises(CheckpointError, match="cannot be decoded"):
        load_checkpoint(path, FP)


def test_missing_file_is_a_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path / "nope.ckpt", FP)


def test_leftover_tmp_from_a_crashed_write_does_not_affect_the_real_file(tmp_path: Path) -> None:
    path = _save(tmp_path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(MAGIC + b"\x00\x00\x00\x10half-written")  # crash mid-write
    assert load_checkpoint(path, FP)["b"] == [1, 2, 3]
    # The next save replaces both cleanly.
    save_checkpoint(path, {"b": [4]}, FP)
    assert load_checkpoint(path, FP) == {"b": [4]}
    assert not tmp.exists()


def test_a_crash_before_the_rename_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _save(tmp_path)
    before = path.read_bytes()

    def crash(src, dst):  # the process dies between the write and the rename
        raise OSError("power cut")

    monkeypatch.setattr(ckpt.os, "replace", crash)
    with pytest.raises(OSError, match="power cut"):
        save_checkpoint(path, {"new": "state"}, FP)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert load_checkpoint(path, FP)["b"] == [1, 2, 3]


def test_write_goes_through_a_temporary_file(tmp_path: Path, monkeypatch) -> None:
    seen = []
    real = os.replace

    def spy(src, dst):
        seen.append((Path(src).name, Path(dst).name, Path(src).read_bytes()[:8]))
        return real(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", spy)
    save_checkpoint(tmp_path / "x.ckpt", STATE, FP)
    assert seen == [("x.ckpt.tmp", "x.ckpt", MAGIC)]
