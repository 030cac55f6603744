"""A byte stream cut at a delimiter, with a bounded partial piece between reads.

Both wire formats of a serial port are delimited: binary frames end at 0x00
(:mod:`firmware_bridge.framing`), ASCII samples at a newline
(:mod:`firmware_bridge.ascii_lines`). A read can end in the middle of a piece, so the
tail is kept until the next read, but never more than ``limit`` bytes of it: a longer
run (line noise, a wrong baud rate) is dropped and counted, and so is the rest of it up
to the next delimiter, after which the stream is in step again.

>>> counts = {"bytes_discarded": 0, "overlong": 0}
>>> cut = Delimited(b"\\n", 8, counts, "overlong", delimiter_counted=True)
>>> cut.split(b"ab\\ncd"), cut.split(b"e\\n0123456789"), cut.split(b"xx\\nok\\n")
([b'ab'], [b'cde'], [b'ok'])
>>> counts
{'bytes_discarded': 13, 'overlong': 1}
"""

from __future__ import annotations


class Delimited:
    """Cuts a byte stream into the pieces between ``delimiter`` bytes.

    ``counts`` is the caller's counter dict: ``bytes_discarded`` and ``overflow`` (the
    name of the counter of pieces dropped for being over ``limit``) are added to there.
    ``delimiter_counted``: a dropped piece's delimiter counts as a discarded byte too.
    """

    def __init__(self, delimiter: bytes, limit: int, counts: dict[str, int], overflow: str,
                 delimiter_counted: bool) -> None:
        if len(delimiter) != 1:
            raise ValueError("the delimiter is one byte")
        self._delim = delimiter[0]
        self.limit = limit
        self._counts = counts
        self._overflow = overflow
        self._extra = int(delimiter_counted)
        self._buf = bytearray()
        self._discarding = False

    def reset(self) -> None:
        """Forget a partial piece (e.g. after the port was reopened); counted as discarded."""
        self._counts["bytes_discarded"] += len(self._buf)
        self._buf.clear()
        self._discarding = False

    def split(self, data: bytes) -> list[bytes]:
        """The pieces ``data`` completes, in order (the first one joined to the tail the
        last read left); the rest of ``data`` is kept for the next read."""
        counts = self._counts
        out: list[bytes] = []
        start = 0
        while True:
            end = data.find(self._delim, start)
            if end < 0:
                self._keep(data[start:])
                return out
            piece = data[start:end]
            start = end + 1
            if self._discarding:  # the end of a piece already dropped
                counts["bytes_discarded"] += len(piece) + self._extra
                self._discarding = False
                continue
            if self._buf:
                self._buf += piece
                piece = bytes(self._buf)
                self._buf.clear()
            out.append(piece)

    def _keep(self, tail: bytes) -> None:
        counts = self._counts
        if self._discarding:
            counts["bytes_discarded"] += len(tail)
            return
        self._buf += tail
        if len(self._buf) > self.limit:
            counts[self._overflow] += 1
            counts["bytes_discarded"] += len(self._buf)
            self._buf.clear()
            self._discarding = True
