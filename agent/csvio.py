"""Reading sensor CSV files (NAB-style ``timestamp,value`` and SKAB-style ``;`` files).

The separator is sniffed from the header (``;``, ``,`` or tab). The timestamp column is
the first of ``timestamp``, ``datetime``, ``ts``, ``time``, ``date`` (any case), else the
first column. Timestamps may be epoch seconds, epoch milliseconds (values above 1e11) or
ISO-8601 (naive times are taken as UTC). Label columns (``anomaly``, ``changepoint``,
``label``, ``is_anomaly``) are never scored.

A bad cell is left out of the row (counted as ``non_numeric`` or ``missing_value``;
literal ``nan``/``inf`` are passed on for the engine to count as ``non_finite``); a row
with the wrong number of cells or a bad timestamp is kept as a row without values
(counted), so the output still has one row per input row. A file that is unreadable,
empty or has no usable column raises :class:`~agent.errors.InputError`.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from agent.errors import InputError

TIMESTAMP_NAMES = ("timestamp", "datetime", "ts", "time", "date")
LABEL_NAMES = ("anomaly", "changepoint", "label", "is_anomaly")
MAX_FILE_BYTES = 2 * 1024**3


@dataclass
class Table:
    path: str
    raw_ts: list[str]
    ts: np.ndarray  # float epoch seconds, NaN where unparseable
    columns: list[str]  # value columns, in file order
    values: np.ndarray  # (rows, columns); NaN where bad/missing (see ``present``)
    present: np.ndarray  # (rows, columns) bool: the cell held a number (nan/inf included)
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    problems: Counter[str] = field(default_factory=Counter)
    first_problem: dict[str, str] = field(default_factory=dict)

    def note(self, reason: str, detail: str) -> None:
        if reason not in self.problems:
            self.first_problem[reason] = detail
        self.problems[reason] += 1


def parse_timestamp(text: str) -> float:
    """Epoch seconds from epoch s / ms or ISO-8601; NaN if unparseable.

    >>> parse_timestamp("2020-03-09 10:14:33")
    1583748873.0
    >>> parse_timestamp("1583748873000")
    1583748873.0
    """
    s = text.strip()
    if not s:
        return math.nan
    try:
        v = float(s)
    except ValueError:
        pass
    else:
        if not math.isfinite(v):
            return math.nan
        return v / 1000.0 if abs(v) > 1e11 else v
    try:
        dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return math.nan
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _sniff(header: str) -> str:
    counts = {sep: header.count(sep) for sep in (";", ",", "\t")}
    sep = max(counts, key=lambda k: counts[k])
    if counts[sep] == 0:
        raise InputError("header has a single column: no ';', ',' or tab separator found")
    return sep


def read_table(path: str | Path) -> Table:
    p = Path(path)
    try:
        if p.stat().st_size > MAX_FILE_BYTES:
            raise InputError(f"{p}: larger than {MAX_FILE_BYTES} bytes")
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: cannot read: {exc}") from exc
    lines = text.splitlines()
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines:
        raise InputError(f"{p}: empty file")
    try:
        sep = _sniff(lines[0])
    except InputError as exc:
        raise InputError(f"{p}: line 1: {exc}") from None
    header = [h.strip() for h in lines[0].split(sep)]
    lower = [h.lower() for h in header]
    ts_col = next((lower.index(n) for n in TIMESTAMP_NAMES if n in lower), 0)
    label_cols = [i for i, h in enumerate(lower) if h in LABEL_NAMES]
    value_cols = [i for i in range(len(header)) if i != ts_col and i not in label_cols]
    if not value_cols:
        raise InputError(f"{p}: line 1: no value columns besides the timestamp")
    rows = [ln for ln in lines[1:] if ln.strip()]
    n = len(rows)
    table = Table(
        path=str(p),
        raw_ts=[""] * n,
        ts=np.full(n, np.nan),
        columns=[header[i] for i in value_cols],
        values=np.full((n, len(value_cols)), np.nan),
        present=np.zeros((n, len(value_cols)), dtype=bool),
        labels={header[i]: np.zeros(n) for i in label_cols},
    )
    width = len(header)
    for r, line in enumerate(rows):
        cells = line.split(sep)
        lineno = r + 2
        if len(cells) != width:
            table.raw_ts[r] = cells[ts_col].strip() if len(cells) > ts_col else ""
            table.note("bad_row", f"line {lineno}: {len(cells)} cells, header has {width}")
            continue
        raw = cells[ts_col].strip()
        table.raw_ts[r] = raw
        t = parse_timestamp(raw)
        if math.isnan(t):
            table.note("bad_timestamp", f"line {lineno}: timestamp {raw!r}")
            continue
        table.ts[r] = t
        for j, ci in enumerate(value_cols):
            cell = cells[ci].strip()
            if not cell:
                table.note("missing_value", f"line {lineno}: column {header[ci]!r} is empty")
                continue
            try:
                table.values[r, j] = float(cell)
                table.present[r, j] = True
            except ValueError:
                table.note("non_numeric", f"line {lineno}: column {header[ci]!r}: {cell!r}")
        for name, ci in zip(table.labels, label_cols, strict=True):
            with contextlib.suppress(ValueError):
                table.labels[name][r] = float(cells[ci])
    if n and np.isnan(table.ts).all():
        raise InputError(f"{p}: no row has a usable timestamp ({table.first_problem})")
    return table
