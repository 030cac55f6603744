"""Labelled synthetic log lines built on :mod:`agent.synthetic_events`.

Every event of a generated PLC event sequence becomes one log line of its own template
(``LOG_TEMPLATES``): a level, a component and a message with variable fields -- batch and
order ids, IP addresses, durations, sizes, paths, UUIDs, hex handles, temperatures, and
also words (operator names, recipes, tanks) that only the miner's wildcards can absorb.
Steps of a workflow instance carry their session id (``job=batch-17``). Lines look like

    2023-11-14T22:13:20.123Z INFO batch.ctrl: Batch B-00017 started, recipe=lager job=batch-17

Anomalies: the event-level ones of :data:`agent.synthetic_events.ANOMALY_TYPES` (an
``unknown_event`` becomes a line of a template never seen before) plus ``error_burst``:
5..10 ERROR lines of the gateway's rare error templates in a row (a failing fieldbus).
Each line is labelled with its anomaly type ("" = normal) and its true template key, so
template mining can be scored by grouping accuracy.

>>> s = generate_logs(500, seed=1)
>>> len(s.lines) == len(s.labels) == len(s.templates) == 500
True
>>> s.lines[0].split()[1] in {"INFO", "WARN", "ERROR", "DEBUG"}
True
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from datetime import UTC, datetime

from agent.synthetic_events import ANOMALY_TYPES as EVENT_ANOMALIES
from agent.synthetic_events import generate_events, vocabulary

LOG_ANOMALY_TYPES = (*EVENT_ANOMALIES, "error_burst")

_USERS = ("alice", "bob", "chen", "dmitri", "eva", "farid", "gita", "hans", "ines", "jonas")
_RECIPES = ("lager", "pilsner", "stout", "ale", "porter", "cola", "lemonade", "tonic")
_TANKS = ("T1", "T2", "T3", "T4", "T5")
_PARTS = ("seal", "bearing", "impeller", "gasket", "valve-seat", "sensor-head")
_FORMATS = ("0.33L", "0.5L", "1.0L", "1.5L")

# event -> (level, component, message format)
LOG_TEMPLATES: dict[str, tuple[str, str, str]] = {
    "BATCH_START": ("INFO", "batch.ctrl", "Batch {batch} started, recipe={recipe}"),
    "RECIPE_LOAD": ("INFO", "batch.recipe", "Loaded recipe {recipe} from {path} ({size})"),
    "VALVE_IN_OPEN": ("DEBUG", "io.valves", "Inlet valve {tank} commanded open, "
                      "feedback after {dur}"),
    "FILL_START": ("INFO", "batch.fill", "Filling tank {tank} to {num} litres"),
    "FILL_END": ("INFO", "batch.fill", "Fill complete: {num} litres in {dur}"),
    "VALVE_IN_CLOSE": ("DEBUG", "io.valves", "Inlet valve {tank} closed, leak test passed"),
    "HEAT_ON": ("INFO", "thermal", "Heater enabled, setpoint {temp} C"),
    "TEMP_REACHED": ("INFO", "thermal", "Setpoint reached at {temp} C after {dur}"),
    "MIX_START": ("INFO", "batch.mixer", "Mixer running at {num} rpm"),
    "MIX_END": ("INFO", "batch.mixer", "Mixer stopped after {dur}, torque {float} Nm"),
    "HEAT_OFF": ("INFO", "thermal", "Heater disabled by sequence"),
    "SAMPLE_TAKEN": ("INFO", "lab.qc", "Sample {hex} drawn from tank {tank}"),
    "QC_CHECK": ("INFO", "lab.qc", "Quality check requested for sample {hex} by {user}"),
    "QC_FAIL": ("WARN", "lab.qc", "Quality check failed: density {float} out of range"),
    "QC_PASS": ("INFO", "lab.qc", "Quality check passed, report {uuid}"),
    "DOSE_ADJUST": ("INFO", "batch.dosing", "Dosing corrected by {float} kg"),
    "VALVE_OUT_OPEN": ("DEBUG", "io.valves", "Outlet valve {tank} commanded open, "
                       "feedback after {dur}"),
    "DRAIN_START": ("INFO", "batch.drain", "Draining tank {tank} to line {num}"),
    "DRAIN_END": ("INFO", "batch.drain", "Tank {tank} empty after {dur}"),
    "VALVE_OUT_CLOSE": ("DEBUG", "io.valves", "Outlet valve {tank} closed, leak test passed"),
    "BATCH_END": ("INFO", "batch.ctrl", "Batch {batch} finished, {num} litres, "
                  "record written to {path}"),
    "CIP_START": ("INFO", "cip.ctrl", "Clean-in-place cycle {batch} started on circuit {num}"),
    "CIP_PUMP_ON": ("INFO", "cip.pump", "CIP pump on, flow {float} m3/h"),
    "RINSE_START": ("INFO", "cip.ctrl", "Rinse phase started with water at {temp} C"),
    "RINSE_END": ("INFO", "cip.ctrl", "Rinse phase ended after {dur}"),
    "CAUSTIC_START": ("INFO", "cip.chem", "Caustic wash started, concentration {float} %"),
    "CAUSTIC_END": ("INFO", "cip.chem", "Caustic wash ended, {num} litres returned"),
    "ACID_START": ("INFO", "cip.chem", "Acid wash started, pH {float}"),
    "ACID_END": ("INFO", "cip.chem", "Acid wash ended after {dur}"),
    "CONDUCTIVITY_OK": ("INFO", "cip.sensor", "Final conductivity {float} mS/cm within limit"),
    "SANITIZE_START": ("INFO", "cip.chem", "Sanitizer dosing started at {temp} C"),
    "SANITIZE_END": ("INFO", "cip.chem", "Sanitizer contact time {dur} reached"),
    "CIP_PUMP_OFF": ("INFO", "cip.pump", "CIP pump off after {dur}"),
    "CIP_END": ("INFO", "cip.ctrl", "Clean-in-place cycle {batch} complete"),
    "CHANGEOVER_START": ("INFO", "line.ctrl", "Changeover to format {format} requested by "
                         "{user}"),
    "LINE_STOP": ("WARN", "line.ctrl", "Line {num} stopped for changeover"),
    "GUARD_OPEN": ("INFO", "safety", "Guard door {num} unlocked and opened"),
    "TOOL_CHANGE": ("INFO", "line.tooling", "Tool set {hex} mounted on station {num}"),
    "GUARD_CLOSE": ("INFO", "safety", "Guard door {num} closed and locked"),
    "FORMAT_SELECT": ("INFO", "line.ctrl", "Format {format} selected, parameters from {path}"),
    "CALIBRATE": ("INFO", "line.vision", "Camera calibration started with target {uuid}"),
    "CAL_OK": ("INFO", "line.vision", "Camera calibration ok, residual {float} px"),
    "LINE_START": ("INFO", "line.ctrl", "Line {num} restarted at {num} units/min"),
    "CHANGEOVER_END": ("INFO", "line.ctrl", "Changeover finished in {dur}"),
    "MAINT_REQUEST": ("WARN", "maint", "Maintenance request {batch} opened by {user}"),
    "LOCKOUT": ("WARN", "safety", "Lockout applied by {user} on drive {hex}"),
    "INSPECT": ("INFO", "maint", "Inspection of {part} started"),
    "INSPECT_DONE": ("INFO", "maint", "Inspection done, {num} findings, photos in {path}"),
    "PART_REMOVE": ("INFO", "maint", "Part {part} removed, serial {hex}"),
    "PART_INSTALL": ("INFO", "maint", "Part {part} installed, serial {hex}"),
    "TEST_RUN": ("INFO", "maint", "Test run of drive {hex} for {dur}: vibration {float} mm/s"),
    "UNLOCK": ("WARN", "safety", "Lockout removed by {user} on drive {hex}"),
    "MAINT_DONE": ("INFO", "maint", "Maintenance request {batch} closed"),
    "HEARTBEAT": ("DEBUG", "gateway", "heartbeat seq={num} uptime={dur} mem={size}"),
    "OPERATOR_LOGIN": ("INFO", "hmi.auth", "User {user} logged in from {ip}"),
    "OPERATOR_LOGOUT": ("INFO", "hmi.auth", "Session of {user} ended after {dur}"),
    "DOOR_OPEN": ("INFO", "safety", "Access door {num} opened with badge {hex}"),
    "NETWORK_RETRY": ("WARN", "net.mqtt", "Publish to {ip}:1883 timed out after {dur}, "
                      "retry {num}"),
    "TEMP_WARN": ("WARN", "thermal", "Jacket temperature {temp} C above warning limit"),
    "PRESSURE_WARN": ("WARN", "io.pressure", "Line pressure {float} bar above warning limit"),
    "LOW_AIR_WARN": ("WARN", "io.air", "Instrument air pressure low: {float} bar"),
}
# errors a healthy gateway logs now and then; a run of them is ``error_burst``
ERROR_TEMPLATES: dict[str, tuple[str, str, str]] = {
    "ERR_MODBUS": ("ERROR", "fieldbus", "Modbus read of unit {num} register {num} failed: "
                   "no response after {dur}"),
    "ERR_WRITE": ("ERROR", "storage", "Write of {size} to {path} failed: I/O error"),
    "ERR_DRIVE": ("ERROR", "fieldbus", "Drive {hex} fault code {num} reported on {ip}"),
}
ERROR_RATE = 0.0015  # normal error lines per line
_WORDS = ("coolant", "relay", "breaker", "encoder", "overcurrent", "phase", "loss", "checksum",
          "watchdog", "firmware", "brownout", "interlock", "mismatch", "stalled", "sensor",
          "underrun", "parity", "overflow", "tamper", "earth", "fault", "drift", "jam")


def true_template(fmt: str) -> str:
    """The message format with every field as ``<*>`` (for reading, not for scoring)."""
    out, depth = [], 0
    for ch in fmt:
        if ch == "{":
            depth += 1
            out.append("<*>")
        elif ch == "}":
            depth -= 1
        elif depth == 0:
            out.append(ch)
    return "".join(out)


class _Fields:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def __call__(self, name: str) -> str:
        r = self.rng
        if name == "batch":
            return f"B-{r.randint(1, 99999):05d}"
        if name == "recipe":
            return r.choice(_RECIPES)
        if name == "user":
            return r.choice(_USERS)
        if name == "tank":
            return r.choice(_TANKS)
        if name == "part":
            return r.choice(_PARTS)
        if name == "format":
            return r.choice(_FORMATS)
        if name == "path":
            return (f"/var/lib/plc/{r.choice(('recipes', 'records', 'media', 'params'))}/"
                    f"{r.randint(1, 9999)}.json")
        if name == "size":
            return r.choice((f"{r.randint(1, 999)}KiB", f"{r.uniform(1, 50):.1f}MB",
                             f"{r.randint(100, 9000)}B"))
        if name == "dur":
            return r.choice((f"{r.randint(5, 999)}ms", f"{r.uniform(1, 600):.1f}s",
                             f"{r.randint(1, 90)}min"))
        if name == "ip":
            return f"10.{r.randint(0, 9)}.{r.randint(0, 255)}.{r.randint(1, 254)}"
        if name == "hex":
            return f"0x{r.getrandbits(32):08x}"
        if name == "uuid":
            h = f"{r.getrandbits(128):032x}"
            return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"
        if name == "temp":
            return f"{r.uniform(4, 95):.1f}"
        if name == "float":
            return f"{r.uniform(0, 50):.2f}"
        if name == "num":
            return str(r.randint(1, 5000))
        raise KeyError(name)


def _render(fmt: str, fields: _Fields) -> str:
    out, i = [], 0
    while i < len(fmt):
        j = fmt.find("{", i)
        if j < 0:
            out.append(fmt[i:])
            break
        k = fmt.index("}", j)
        out.append(fmt[i:j])
        out.append(fields(fmt[j + 1:k]))
        i = k + 1
    return "".join(out)


@dataclasses.dataclass(frozen=True)
class LogSet:
    """One source's labelled log lines."""

    source: str
    ts: tuple[float, ...]
    lines: tuple[str, ...]
    labels: tuple[str, ...]  # "" or one of LOG_ANOMALY_TYPES
    templates: tuple[str, ...]  # the true template key of each line (event or error name)

    def write(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as fh:
            for line in self.lines:
                fh.write(line + "\n")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _unknown(code: str, rng: random.Random) -> tuple[str, str, str]:
    words = " ".join(rng.sample(_WORDS, rng.randint(3, 5)))
    return (rng.choice(("ERROR", "WARN")), rng.choice(("fieldbus", "gateway", "io.valves")),
            f"Alarm {code} raised: {words}")


def generate_logs(n_lines: int, seed: int = 0, anomalies: Sequence[str] = (),
                  rate: float = 0.15, source: str = "plc1",
                  t0: float = 1_700_000_000.0) -> LogSet:
    """``n_lines`` lines; ``rate`` as in :func:`~agent.synthetic_events.generate_events`
    (for ``error_burst``: bursts per 10 lines x ``rate`` / 10, about one per instance)."""
    bad = [a for a in anomalies if a not in LOG_ANOMALY_TYPES]
    if bad:
        raise ValueError(f"unknown anomaly types {bad} (known: {LOG_ANOMALY_TYPES})")
    ev_anoms = [a for a in anomalies if a != "error_burst"]
    bursts = "error_burst" in anomalies
    ev_rate = rate * len(ev_anoms) / len(anomalies) if anomalies else 0.0
    es = generate_events(n_lines, seed=seed, anomalies=ev_anoms, rate=ev_rate, source=source,
                         t0=t0)
    rng = random.Random(seed * 7919 + 17)
    fields = _Fields(rng)
    known = set(vocabulary())
    burst_p = (rate / len(anomalies)) / 15.0 if bursts else 0.0  # ~15 lines per instance
    lines: list[str] = []
    labels: list[str] = []
    keys: list[str] = []
    ts: list[float] = []
    errors = sorted(ERROR_TEMPLATES)

    def emit(t: float, key: str, spec: tuple[str, str, str], label: str, sid: str) -> None:
        level, comp, fmt = spec
        msg = _render(fmt, fields)
        if sid:
            msg += f" job={sid}"
        lines.append(f"{_iso(t)} {level} {comp}: {msg}")
        labels.append(label)
        keys.append(key)
        ts.append(t)

    for i, (t, ev, lab) in enumerate(zip(es.ts, es.events, es.labels, strict=True)):
        if len(lines) >= n_lines:
            break
        sid = es.session_of(i) if hasattr(es, "session_of") else ""
        if ev in known:
            emit(t, ev, LOG_TEMPLATES[ev], lab, sid)
        else:  # a never-seen alarm code: a never-seen template
            emit(t, ev, _unknown(ev, rng), lab, "")
        if lab:
            continue
        if rng.random() < ERROR_RATE:
            e = rng.choice(errors)
            emit(t + 0.001, e, ERROR_TEMPLATES[e], "", "")
        elif bursts and rng.random() < burst_p:
            for j in range(rng.randint(5, 10)):
                e = rng.choice(errors)
                emit(t + 0.001 * (j + 1), e, ERROR_TEMPLATES[e], "error_burst", "")
    n = min(n_lines, len(lines))
    return LogSet(source, tuple(ts[:n]), tuple(lines[:n]), tuple(labels[:n]), tuple(keys[:n]))
