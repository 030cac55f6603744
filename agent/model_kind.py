"""Which slot a model file fills, read before loading it: ``autoencoder`` or ``next_event``.

The agent keeps one active model per kind (docs/model-update.md): the sensor autoencoder
(stage 3 of every stream) and the next-event model of the event sources. An update is
dispatched on the ``kind`` of the model's metadata; :func:`peek_kind` reads it from the
ONNX protobuf's top-level ``metadata_props`` without building a session (the graph is
skipped, not parsed), so the right loader builds the one shadow session.

>>> peek_kind(b"not a model")
'autoencoder'
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from agent.errors import ModelUpdateError, Reason
from agent.model_meta import META_KEY, NEXT_EVENT

AUTOENCODER = "autoencoder"
KINDS = (AUTOENCODER, NEXT_EVENT)
_METADATA_PROPS = 14  # ModelProto.metadata_props (repeated StringStringEntryProto)


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        out |= (b & 0x7F) << shift
        if not b & 0x80:
            return out, i
        shift += 7


def _fields(buf: bytes) -> Any:
    """``(field number, wire type, value)`` of one protobuf message level."""
    i = 0
    while i < len(buf):
        tag, i = _varint(buf, i)
        num, wire = tag >> 3, tag & 7
        if wire == 0:
            val, i = _varint(buf, i)
            yield num, wire, val
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            n, i = _varint(buf, i)
            if i + n > len(buf):
                raise ValueError("truncated field")
            yield num, wire, buf[i:i + n]
            i += n
        else:
            raise ValueError(f"wire type {wire}")


def peek_kind(data: bytes) -> str:
    """The ``kind`` in the model's metadata; ``autoencoder`` when it cannot be read (the
    loader then reports what is wrong with the file)."""
    try:
        for num, wire, val in _fields(data):
            if num != _METADATA_PROPS or wire != 2:
                continue
            entry = {n: v for n, w, v in _fields(val) if w == 2}
            if entry.get(1) == META_KEY.encode():
                kind = json.loads(entry.get(2, b"{}")).get("kind", AUTOENCODER)
                return kind if kind in KINDS else AUTOENCODER
    except (ValueError, AttributeError, UnicodeDecodeError):
        pass
    return AUTOENCODER


def check_event_fit(model: Any, manifest: Mapping[str, Any], sources: Sequence[Any],
                    history: int | None) -> list[str]:
    """Event sources a next-event model will score; raise ``features_mismatch`` when none
    (or not every source the manifest targets) does, or the history differs from
    ``events.sequence.history``."""
    fits = [s.id for s in sources if s.sequence]
    unfit = [t for t in manifest.get("targets") or () if t not in fits]
    if unfit:
        raise ModelUpdateError(Reason.FEATURES_MISMATCH,
                               f"targets {unfit} are no event source with sequence: true")
    if not fits:
        raise ModelUpdateError(Reason.FEATURES_MISMATCH,
                               "a next_event model, but no event source has sequence: true")
    if history is not None and history != model.history:
        raise ModelUpdateError(Reason.FEATURES_MISMATCH,
                               f"history {model.history} != events.sequence.history {history}")
    return fits
