"""The template miner's state on disk: plain JSON, versioned, checksummed, atomic.

Layout: one JSON object ``{"format", "version", "sha256", "payload"}`` where ``sha256``
is the hash of the payload's canonical JSON (sorted keys, no spaces). Unlike detector
checkpoints there is no pickle: the file is parsed as JSON and every field is checked
(:meth:`agent.logs.miner.TemplateMiner.load_state`), so a damaged or foreign file can
only be refused. Writes go to a temporary file, fsync, then ``os.replace``.

>>> import tempfile, os
>>> from agent.logs.miner import TemplateMiner
>>> m = TemplateMiner()
>>> _ = m.add("pump 3 started")
>>> p = os.path.join(tempfile.mkdtemp(), "miner.json")
>>> _ = save_miner(p, m)
>>> n = TemplateMiner()
>>> load_miner(p, n); list(n.clusters) == list(m.clusters)
True
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from agent.errors import CheckpointError
from agent.logs.miner import TemplateMiner

FORMAT = "edge-agent/log-templates"
VERSION = 1
MAX_STATE_BYTES = 64 * 1024 * 1024


def _canonical(payload: Any) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def save_miner(path: str | Path, miner: TemplateMiner) -> int:
    """Write the miner's state atomically; return the bytes written."""
    p = Path(path)
    payload = miner.state_dict()
    doc = {"format": FORMAT, "version": VERSION,
           "sha256": hashlib.sha256(_canonical(payload)).hexdigest(), "payload": payload}
    blob = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(blob)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, p)
    with contextlib.suppress(OSError):  # some filesystems refuse a directory fsync
        dfd = os.open(p.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    return len(blob)


def load_miner(path: str | Path, miner: TemplateMiner) -> None:
    """Load a saved state into ``miner``; raise CheckpointError (miner unchanged) if unusable."""
    p = Path(path)
    try:
        if p.stat().st_size > MAX_STATE_BYTES:
            raise CheckpointError(f"{p}: larger than {MAX_STATE_BYTES} bytes")
        doc = json.loads(p.read_bytes())
    except OSError as exc:
        raise CheckpointError(f"{p}: cannot read: {exc}") from exc
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"{p}: not JSON: {str(exc)[:80]}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{p}: not a log template state")
    if doc.get("version") != VERSION:
        raise CheckpointError(f"{p}: version {doc.get('version')!r} != {VERSION}")
    payload = doc.get("payload")
    if hashlib.sha256(_canonical(payload)).hexdigest() != doc.get("sha256"):
        raise CheckpointError(f"{p}: checksum mismatch")
    try:
        miner.load_state(payload)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{p}: {exc}") from exc
