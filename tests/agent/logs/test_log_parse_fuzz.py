"""The line parser on common layouts, and fuzzing of parser, masker, miner and LogStream."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.events.config import EventsConfig, EventSourceConfig, LogsConfig
from agent.logs.mask import mask_tokens
from agent.logs.miner import LineRejected, TemplateMiner
from agent.logs.parse import LineParser, normalise_level, parse_ts
from agent.logs.stream import LogStream


@pytest.mark.parametrize(("line", "ts", "level", "component", "message"), [
    ("2024-05-01T12:00:00Z INFO pump.ctrl: started", 1714564800.0, "INFO", "pump.ctrl",
     "started"),
    ("2024-05-01 12:00:00,250 WARNING agent.mqtt: reconnecting", 1714564800.25, "WARN",
     "agent.mqtt", "reconnecting"),
    ("2024-05-01T14:00:00+02:00 [ERROR] [db] connection lost", 1714564800.0, "ERROR", "db",
     "connection lost"),
    ("2024-05-01 12:00:00,000 [main] ERR com.acme.Pump - overheat 90C", 1714564800.0,
     "ERROR", "com.acme.Pump", "overheat 90C"),
    ("1714564800.5 crit x: y", 1714564800.5, "CRITICAL", "x", "y"),
    ("081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 terminating",
     1226262975.0, "INFO", "dfs.DataNode$PacketResponder", "PacketResponder 1 terminating"),
    ("2024-05-01T12:00:00Z ERROR something bad", 1714564800.0, "ERROR", None,
     "something bad"),
    ("free text without a layout", None, None, None, "free text without a layout"),
])
def test_auto_layouts(line: str, ts: float | None, level: str | None, component: str | None,
                      message: str) -> None:
    p = LineParser().parse(line)
    assert (p.ts, p.level, p.component, p.message) == (ts, level, component, message)
    assert not p.continuation


def test_syslog_continuations_and_custom_format() -> None:
    p = LineParser()
    s = p.parse("May  1 12:00:00 gw1 sshd[123]: Accepted password for root")
    assert s.component == "sshd" and s.level is None and s.ts is not None
    for cont in ("\tat com.acme.Pump.run(Pump.java:42)", "Caused by: java.io.IOException",
                 "    ... 12 more", ""):
        assert p.parse(cont).continuation
    custom = LineParser(r"^(?P<level>\w)/(?P<component>\w+)\((?P<session>\d+)\): (?P<message>.*)$")
    c = custom.parse("W/Wifi(42): scan failed")
    assert (c.level, c.component, c.session, c.message) == ("W", "Wifi", "42", "scan failed")
    sess = LineParser(session_pattern=r"job=(\S+)").parse(
        "2024-05-01T12:00:00Z INFO a: step 3 job=batch-7")
    assert sess.session == "batch-7"


def test_level_and_timestamp_helpers() -> None:
    assert normalise_level("warning") == "WARN" and normalise_level("[Err]") == "ERROR"
    assert normalise_level("") is None
    assert parse_ts("1714564800123") == 1714564800.123
    assert parse_ts("2024-13-45T99:00:00") is None and parse_ts("nonsense") is None


_LINE_PARTS = st.sampled_from([
    "2024-05-01T12:00:00Z", "2024-05-01 12:00:00,1", "081109 203615 1", "May  1 12:00:00",
    "99999-99-99T99:99:99Z", "1714564800", "0", " ", "INFO", "[ERROR]", "comp:", "[c]",
    "-", "at", "\t", "10.0.0.1:80", "::1", "0xdeadbeef", "/a/b/c", "12ms", "4KiB", "=",
    "k=v", "[", "]", "(", "\x00", "\u00e9", "\U0001f600", "\\", "C:\\x\\y",
])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=300),
                 st.lists(_LINE_PARTS | st.text(max_size=12), max_size=30).map(" ".join)))
def test_fuzz_parse_mask_mine_never_raise(line: str) -> None:
    parsed = LineParser(session_pattern=r"job=(\S+)").parse(line)
    assert isinstance(parsed.message, str)
    tokens = mask_tokens(parsed.message)
    assert all(t and not any(c.isspace() for c in t) for t in tokens)
    m = TemplateMiner(max_tokens=50, max_chars=200)
    try:
        r = m.add(parsed.message)
    except LineRejected as exc:
        assert exc.reason in ("too_many_tokens", "line_too_long", "empty_message")
    else:
        assert r.created and m.match(parsed.message) is not None


_STREAM = LogStream(EventsConfig(sources=(EventSourceConfig("app", kind="logs"),),
                                 logs=LogsConfig(max_line_chars=256, max_tokens=40)))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.text(max_size=400),
                          st.lists(_LINE_PARTS, max_size=40).map(" ".join)), max_size=8))
def test_fuzz_log_stream_counts_instead_of_raising(lines: list[str]) -> None:
    for line in lines:
        out = _STREAM.process_line("app", line)
        assert out.skipped or out.decision is not None
        assert out.decision is None or 0.0 <= out.decision.score <= 1.0
    st_ = _STREAM.engine.stats()
    assert set(st_["rejected"]) <= {"line_too_long", "too_many_tokens", "empty_message"}
