"""Detector checkpoints: atomic, versioned, integrity-checked files.

Layout: ``MAGIC`` (8 bytes) | header length (4 bytes, big endian) | header JSON |
payload. The header names the format version, the agent version, a fingerprint of the
detector configuration, and the payload's SHA-256. Anything that does not match raises
:class:`~agent.errors.CheckpointError` with the reason; callers log it and start fresh.

Checkpoints are written by the agent itself into its own state directory (never received
from the network), so the payload is a pickle of detector state (River models pickle).
Writes go to a temporary file, fsync, then ``os.replace``: a crash mid-write leaves the
previous checkpoint intact.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent._version import __version__
from agent.errors import CheckpointError

MAGIC = b"EDGECKP1"
FORMAT_VERSION = 1


def save_checkpoint(path: str | Path, state: Any, fingerprint: str) -> int:
    """Write ``state`` atomically; return the number of bytes written."""
    p = Path(path)
    payload = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    header = json.dumps(
        {
            "format": FORMAT_VERSION,
            "agent_version": __version__,
            "fingerprint": fingerprint,
            "sha256": hashlib.sha256(payload).hexdigest(),
            "size": len(payload),
        },
        sort_keys=True,
    ).encode()
    blob = MAGIC + struct.pack(">I", len(header)) + header + payload
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except OSError:  # disk full or read-only: no partial file left behind, the old one stays
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    try:
        dfd = os.open(p.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # pragma: no cover - some filesystems refuse directory fsync
        pass
    return len(blob)


def load_checkpoint(path: str | Path, fingerprint: str) -> Any:
    """Read and verify a checkpoint; raise CheckpointError with the reason if unusable."""
    p = Path(path)
    try:
        blob = p.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{p}: cannot read: {exc}") from exc
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + 4:
        raise CheckpointError(f"{p}: not a checkpoint (bad magic)")
    (hlen,) = struct.unpack(">I", blob[len(MAGIC) : len(MAGIC) + 4])
    start = len(MAGIC) + 4
    try:
        header = json.loads(blob[start : start + hlen])
    except ValueError as exc:
        raise CheckpointError(f"{p}: corrupt header") from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"{p}: corrupt header")
    if header.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{p}: format {header.get('format')} != {FORMAT_VERSION}")
    if header.get("agent_version") != __version__:
        raise CheckpointError(
            f"{p}: written by agent {header.get('agent_version')}, this is {__version__}"
        )
    if header.get("fingerprint") != fingerprint:
        raise CheckpointError(f"{p}: detector configuration changed since it was written")
    payload = blob[start + hlen :]
    if len(payload) != header.get("size") or (
        hashlib.sha256(payload).hexdigest() != header.get("sha256")
    ):
        raise CheckpointError(f"{p}: payload corrupt (size or sha256 mismatch)")
    try:
        return pickle.loads(payload)
    except Exception as exc:  # unpickling can raise nearly anything on damaged state
        raise CheckpointError(f"{p}: payload cannot be decoded: {exc}") from exc


# What a checkpoint that loads but does not fit the configuration raises in a ``load_state``.
RESTORE_ERRORS = (CheckpointError, KeyError, TypeError, ValueError, AttributeError)


def restore_into(path: str | Path, fingerprint: str, apply: Callable[[Any], None],
                 fresh: Callable[[Exception], None]) -> Any:
    """Load the checkpoint at ``path`` and ``apply`` it; the state, or None when there is
    no file or it is unusable (then ``fresh(reason)`` has put the caller back in a fresh
    state: a half-applied checkpoint is never kept)."""
    p = Path(path)
    if not p.exists():
        return None
    try:
        state = load_checkpoint(p, fingerprint)
        apply(state)
    except RESTORE_ERRORS as exc:
        fresh(exc)
        return None
    return state
