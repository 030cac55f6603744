"""Pure parts of live event ingest: payload parsing, topics, model-kind dispatch."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import ModelUpdateError
from agent.events.config import EventsConfig, EventSourceConfig, RarityConfig
from agent.events.live import EventLive, events_checkpoint_path, parse_event_payload, source_topic
from agent.logs.stream import miner_from_config
from agent.model_kind import AUTOENCODER, check_event_fit, peek_kind
from agent.sinks import MemorySink
from agent.topics import TopicTree
from tests.agent.model_update_helpers import model_blob

SCHEMA = json.loads((Path(__file__).resolve().parents[3] / "docs" / "schemas" / "event.json")
                    .read_text(encoding="utf-8"))


def test_single_event_batch_and_defaults() -> None:
    p = parse_event_payload(b'{"ts": 1700000000000, "event": "OPEN", "level": "WARN"}',
                            now=5.0, source="plc1")
    assert [(e.ts, e.source, e.event, dict(e.attrs)) for e in p.events] == [
        (1700000000.0, "plc1", "OPEN", {"level": "WARN"})]
    p = parse_event_payload(json.dumps({"events": [{"event": 17}, {"ts": "2024-01-01T00:00:00Z",
                                                                   "event": "B"}]}).encode(),
                            now=5.0)
    assert [(e.ts, e.event) for e in p.events] == [(5.0, "17"), (1704067200.0, "B")]
    assert p.ts_defaulted == 1 and p.rejects == []
    p = parse_event_payload(b'{"event": "A", "batch": "b7", "other": "x"}', now=1.0,
                            session_key="batch")
    assert dict(p.events[0].attrs) == {"batch": "b7"}  # the sequence model's session


@pytest.mark.parametrize(("payload", "reason"), [
    (b"\xff\xfe", "invalid_json"), (b"{oops", "invalid_json"), (b'"A"', "bad_shape"),
    (b'{"ts": 1}', "missing_event"), (b'{"event": null}', "missing_event"),
    (b'{"event": 1.5}', "bad_event"), (b'{"event": false}', "bad_event"),
    (b'{"event": "A", "ts": -3}', "bad_timestamp"), (b'{"event": "A", "ts": true}',
                                                    "bad_timestamp"),
    (b'{"events": "A"}', "bad_batch"), (b'{"events": [1]}', "bad_shape"),
    (b'{"events": [' + b",".join([b'{"event": "A"}'] * 4) + b"]}", "batch_too_large"),
    (b'{"event": "' + b"x" * 300 + b'"}', "too_large"),
])
def test_bad_payloads_name_their_reason(payload: bytes, reason: str) -> None:
    p = parse_event_payload(payload, now=0.0, max_bytes=256, max_batch=3)
    assert p.events == [] and [r for r, _ in p.rejects] == [reason]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300) | st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(
        st.sampled_from(["ts", "event", "events", "level"]), c, max_size=4),
    max_leaves=20).map(lambda v: json.dumps(v).encode()))
def test_no_payload_raises_and_every_event_fits_the_schema(payload: bytes) -> None:
    p = parse_event_payload(payload, now=1.0)
    for e in p.events:
        assert isinstance(e.event, str) and isinstance(e.ts, float)
        jsonschema.validate({"ts": e.ts, "event": e.event}, SCHEMA)


def test_topics_and_checkpoint_path() -> None:
    tree = TopicTree("edge", "s1", "gw")
    assert source_topic(tree, EventSourceConfig("plc1")) == "edge/v1/s1/gw/events/plc1"
    assert source_topic(tree, EventSourceConfig("app", kind="logs")) == "edge/v1/s1/gw/logs/app"
    assert source_topic(tree, EventSourceConfig("x", topic="plant/+/alarms")) == "plant/+/alarms"
    assert events_checkpoint_path(Path("/s/ckpt.bin")) == Path("/s/ckpt.bin.events")


def test_peek_kind_reads_autoencoders_and_tolerates_garbage() -> None:
    assert peek_kind(model_blob("1.0.0")) == AUTOENCODER
    assert peek_kind(b"") == AUTOENCODER and peek_kind(b"\x08\xff\xff\xff") == AUTOENCODER


def test_event_fit_names_the_problem() -> None:
    class M:
        history = 10

    srcs = (EventSourceConfig("a"), EventSourceConfig("b", sequence=False))
    assert check_event_fit(M(), {"targets": []}, srcs, None) == ["a"]
    for man, sources, hist, match in (({"targets": ["b"]}, srcs, None, "targets"),
                                      ({}, srcs[1:], None, "sequence: true"),
                                      ({}, srcs, 6, "history 10")):
        with pytest.raises(ModelUpdateError, match=match):
            check_event_fit(M(), man, sources, hist)


def _live() -> EventLive:
    cfg = EventsConfig(sources=(EventSourceConfig("plc1"), EventSourceConfig("app", kind="logs")),
                       rarity=RarityConfig(min_events=5))
    return EventLive(cfg, TopicTree("edge", "s1", "gw"), agent_id="gw", sinks=[MemorySink()],
                     miner=miner_from_config(cfg))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["events/plc1", "logs/app"]), st.binary(max_size=200)
                          | st.text(max_size=200).map(str.encode)), max_size=8))
def test_any_message_on_an_event_topic_is_scored_or_counted(
        msgs: list[tuple[str, bytes]]) -> None:
    live = _live()
    for topic, payload in msgs:
        live.handle(f"edge/v1/s1/gw/{topic}", payload, now=1.0)
    st_ = live.stats()
    assert st_["messages_in"] == len(msgs)
    assert st_["events_in"] == sum(s["events"] for s in st_["sources"].values()) + sum(
        v for k, v in st_["rejected"].items() if k in ("empty_event", "event_too_long",
                                                      "out_of_order"))  # the engine's own
