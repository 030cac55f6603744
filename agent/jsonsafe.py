"""JSON decoding for bytes that come from outside (MQTT payloads, commands, offers).

``json.loads`` raises :class:`RecursionError` on deeply nested input (``[[[[...`` a few
thousand levels deep fits easily in one MQTT message). That is not a :class:`ValueError`,
so a parser that only catches ``ValueError`` lets it escape and, on the detection
thread, stops the agent. :func:`loads` turns it into the ``ValueError`` every caller
already handles.

>>> loads(b"[" * 100_000)
Traceback (most recent call last):
...
ValueError: JSON nested too deeply
>>> loads(b'{"a": [1]}')
{'a': [1]}
"""

from __future__ import annotations

import json
from typing import Any


def loads(data: bytes | str) -> Any:
    """``json.loads``, raising only :class:`ValueError` (``UnicodeDecodeError`` included)."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
