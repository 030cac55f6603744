"""Property-based fuzzing of every parser an outsider can reach (issue #7, "Bad input").

Reachable from the network or a device: MQTT ingest payloads (JSON point/batch/rows, CSV,
the binary batch), ``config/desired``, command bodies, model offers (manifests) and chunk
topics/payloads, serial frames (binary and ASCII lines); from an operator's file: replay
CSVs. For each: no exception escapes (only the parser's own documented error type, where
it has one), every rejection carries a reason, and valid items sent alongside bad ones
are all kept.

``TRIED`` counts the examples each property actually ran; with ``EDGE_FUZZ_REPORT=FILE``
the counts are written there as JSON at the end of the module (the figures of issue #7).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.config import config_from_dict
from agent.config_live import COMMANDS
from agent.control import dispatch, evaluate_desired, parse_command
from agent.csvio import read_table
from agent.errors import InputError, ModelUpdateError
from agent.jsonsafe import loads as loads_json
from agent.model_store import ModelStore, Offer, parse_offer
from agent.payloads import parse_payload
from agent.signing import KeyRing
from agent.topics import TopicTree
from firmware_bridge.ascii_lines import AsciiLineParser
from firmware_bridge.batch import encode_batch
from firmware_bridge.framing import Frame, FrameDecoder, encode_frame
from firmware_bridge.messages import Data, Heartbeat

pytestmark = pytest.mark.slow  # ~70 s at 400 examples per property
TRIED: Counter[str] = Counter()
NOW = 1_700_000_000.0
FUZZ = settings(max_examples=int(os.environ.get("EDGE_FUZZ_EXAMPLES", "400")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

PAYLOAD_REASONS = {"invalid_json", "bad_shape", "bad_timestamp", "bad_encoding", "bad_csv",
                   "bad_batch", "too_large", "no_stream"}


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    out = os.environ.get("EDGE_FUZZ_REPORT")
    if out:
        Path(out).write_text(json.dumps(dict(sorted(TRIED.items())), indent=1))


def _check_rejects(rejects: list[tuple[str, str]]) -> None:
    for reason, detail in rejects:
        assert reason in PAYLOAD_REASONS, reason
        assert isinstance(detail, str)


# --------------------------------------------------------------------------- strategies

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                         st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda c: st.one_of(
    st.lists(c, max_size=4), st.dictionaries(st.text(max_size=8), c, max_size=4)),
    max_leaves=20)
finite = st.floats(allow_nan=False, allow_infinity=False, width=32)
epoch = st.floats(min_value=0, max_value=4e9, allow_nan=False)

valid_point = st.builds(
    lambda ts, vals: {"ts": ts, "values": vals},
    epoch, st.dictionaries(st.text(min_size=1, max_size=8), finite, min_size=1, max_size=4))
invalid_point = st.one_of(
    json_scalars, st.lists(json_scalars, max_size=3),
    st.builds(lambda v: {"ts": 1.0, "values": v},
              st.one_of(json_scalars, st.just({}), st.lists(json_scalars, max_size=2))),
    st.builds(lambda t: {"ts": t, "values": {"a": 1.0}},
              st.one_of(st.booleans(), st.floats(max_value=-1e-3),
                        st.text(alphabet="xyz!", min_size=1, max_size=6),
                        st.lists(st.integers(), max_size=2), st.just(10**400))),
)


# --------------------------------------------------------------------------- MQTT payloads


@FUZZ
@given(st.binary(max_size=2048), st.sampled_from(["auto", "json", "csv", "binary"]),
       st.one_of(st.none(), st.just("s")))
def test_payload_arbitrary_bytes(data: bytes, fmt: str, stream: str | None) -> None:
    TRIED["mqtt_payload_bytes"] += 1
    r = parse_payload(data, stream=stream, now=NOW, fmt=fmt, channels=("a", "b"),
                      default_stream=None)
    _check_rejects(r.rejects)
    assert r.points or r.rejects


@FUZZ
@given(json_values)
def test_payload_arbitrary_json(obj: Any) -> None:
    TRIED["mqtt_payload_json"] += 1
    data = json.dumps(obj).encode()
    r = parse_payload(data, stream=None, now=NOW, default_stream="fallback")
    _check_rejects(r.rejects)
    for p in r.points:
        assert isinstance(p.ts, float) and math.isfinite(p.ts) and p.values


@FUZZ
@given(st.lists(st.tuples(st.booleans(), valid_point, invalid_point), min_size=1, max_size=12))
def test_payload_json_batch_keeps_valid_items(items: list[tuple[bool, Any, Any]]) -> None:
    TRIED["mqtt_payload_json_batch"] += 1
    batch = [good if ok else bad for ok, good, bad in items]
    r = parse_payload(json.dumps(batch).encode(), stream="s", now=NOW)
    _check_rejects(r.rejects)
    want = [good for ok, good, _ in items if ok]
    assert [p.values for p in r.points] == [g["values"] for g in want]
    assert len(r.rejects) == len(items) - len(want)


@FUZZ
@given(st.lists(st.tuples(st.booleans(), epoch, finite, st.text(
    st.characters(codec="ascii", exclude_characters="\r\n\x0b\x0c\x1c\x1d\x1e\x85"),
    max_size=15)), min_size=1, max_size=12))
def test_payload_csv_keeps_valid_lines(lines: list[tuple[bool, float, float, str]]) -> None:
    TRIED["mqtt_payload_csv"] += 1
    text = ["ts,a"]
    want = []
    bad = 0
    for ok, ts, v, junk in lines:
        if ok:
            text.append(f"{ts!r},{v!r}")
            want.append(v)
        elif junk.strip() and junk.count(",") != 1:
            text.append(junk)
            bad += 1
    r = parse_payload("\n".join(text).encode(), stream="s", now=NOW, fmt="csv")
    _check_rejects(r.rejects)
    assert [p.values["a"] for p in r.points] == want
    assert len(r.rejects) == bad


@FUZZ
@given(st.lists(st.tuples(epoch, st.lists(finite, min_size=2, max_size=2)), max_size=20),
       st.integers(0, 10_000), st.binary(min_size=1, max_size=4))
def test_payload_binary_batch_valid_and_mutated(rows: list[tuple[float, list[float]]],
                                                where: int, junk: bytes) -> None:
    TRIED["mqtt_payload_binary"] += 1
    data = encode_batch("dev7", ["a", "b"], rows)
    r = parse_payload(data, stream=None, now=NOW)
    assert r.rejects == [] and len(r.points) == sum(1 for _ in rows)
    i = where % len(data)
    mutated = data[:i] + junk + data[i + len(junk):]
    r = parse_payload(mutated, stream=None, now=NOW)
    _check_rejects(r.rejects)


def test_payload_deeply_nested_json_and_huge_integers_are_rejected() -> None:
    for data in (b"[" * 200_000, b'{"a":' * 100_000,
                 b'{"ts": 1' + b"0" * 400 + b', "values": {"a": 1}}',
                 b'{"v":1,"channels":["a"],"rows":[[1' + b"0" * 400 + b',1],[5,2]]}'):
        r = parse_payload(data, stream="s", now=NOW)
        _check_rejects(r.rejects)
        assert r.rejects
    r = parse_payload(b'{"v":1,"channels":["a"],"rows":[[1' + b"0" * 400 + b',1],[5,2]]}',
                      stream="s", now=NOW)
    assert [p.ts for p in r.points] == [5.0]  # the valid row alongside is kept


# --------------------------------------------------------------------------- control plane

BASE = {"streams": [{"id": "s", "channels": ["a", "b"]}],
        "detectors": {"river": {"enabled": False}}}
CURRENT = config_from_dict(BASE)
desired_docs = st.fixed_dictionaries(
    {"version": st.one_of(st.text(max_size=4), st.integers(), json_scalars)},
    optional={"alerts": st.dictionaries(st.sampled_from(["k", "n", "threshold", "x"]),
                                        json_values, max_size=3),
              "detectors": st.dictionaries(st.sampled_from(["zscore", "river", "onnx"]),
                                           json_values, max_size=2),
              "streams": json_values, "mqtt": json_values, "store": json_values,
              "agent": st.dictionaries(st.sampled_from(["log_level", "id", "zz"]),
                                       json_values, max_size=2)})


@FUZZ
@given(st.one_of(desired_docs.map(lambda d: json.dumps(d).encode()), st.binary(max_size=300)))
def test_config_desired_never_raises(payload: bytes) -> None:
    TRIED["config_desired"] += 1
    out = evaluate_desired(BASE, {}, payload, CURRENT)
    assert out.code in (200, 400)
    if out.code == 400:
        assert isinstance(out.error, str) and out.error
    else:
        assert out.config is not None


class _Target:
    """Every command succeeds with an empty result (the parser and dispatch are fuzzed)."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("cmd_"):
            return lambda *a: {}
        raise AttributeError(name)


@FUZZ
@given(st.one_of(st.sampled_from(COMMANDS), st.text(max_size=12)),
       st.one_of(st.builds(lambda i, a: json.dumps({"id": i, "args": a}).encode(),
                           json_values, json_values), st.binary(max_size=200)))
def test_command_payloads_never_raise(name: str, payload: bytes) -> None:
    TRIED["command"] += 1
    reply = dispatch(_Target(), parse_command(name, payload), COMMANDS, ("s",))
    assert reply["code"] in (200, 400, 403, 404, 409, 500)
    assert ("error" in reply) == (reply["code"] != 200)
    json.dumps(reply, default=str)


# --------------------------------------------------------------------------- model updates

manifests = st.fixed_dictionaries(
    {}, optional={"name": st.one_of(st.text(max_size=8), json_scalars),
                  "version": st.one_of(st.sampled_from(["1.0.0", "1.2.3-rc1"]), json_scalars),
                  "sha256": st.one_of(st.just("a" * 64), json_scalars),
                  "size": st.one_of(st.integers(-5, 10**9), json_scalars),
                  "targets": json_values, "key_id": json_scalars,
                  "signature_alg": st.one_of(st.just("ed25519"), json_scalars),
                  "signature": st.one_of(st.just("AAAA"), json_scalars)})


@FUZZ
@given(st.one_of(
    st.builds(lambda m, c, s, o: json.dumps({"manifest": m, "chunks": c, "chunk_size": s,
                                             "offer_id": o}).encode(),
              manifests, json_scalars | st.integers(0, 5000), st.integers(-1, 2**21),
              json_scalars),
    st.binary(max_size=300)))
def test_model_offer_raises_only_model_update_error(payload: bytes) -> None:
    TRIED["model_offer"] += 1
    try:
        offer = parse_offer(payload, max_bytes=1 << 20, max_chunks=64, max_chunk_bytes=65536)
    except ModelUpdateError as exc:
        assert exc.reason and exc.detail
        return
    assert offer.chunks <= 64 and offer.size <= 1 << 20
    with pytest.raises(ModelUpdateError):  # no trusted key: any signature is refused
        KeyRing().verify(offer.manifest)


_MODELS = Path(tempfile.mkdtemp(prefix="fuzz-models-"))
_STORE = ModelStore(_MODELS / "m")
_TREE = TopicTree("edge", "site", "gw")
_STAGING = _STORE.stage(Offer({"name": "m", "version": "1.0.0", "sha256": "a" * 64,
                               "size": 1000}, 4, 256))


@pytest.fixture(scope="module", autouse=True)
def _cleanup_models() -> Iterator[None]:
    yield
    shutil.rmtree(_MODELS, ignore_errors=True)
    shutil.rmtree(_CSV_DIR, ignore_errors=True)


@FUZZ
@given(st.one_of(st.text(max_size=40).map(lambda t: f"{_TREE.root}/model/chunk/{t}"),
                 st.builds(lambda n: f"{_TREE.root}/model/chunk/1.0.0/{n}", st.integers(-3, 9)),
                 st.text(max_size=60)),
       st.binary(max_size=300))
def test_model_chunk_topics_and_payloads(topic: str, data: bytes) -> None:
    TRIED["model_chunk"] += 1
    chunk = _TREE.chunk_of(topic)
    if chunk is None:
        return
    version, n = chunk
    staging = _STAGING if version == "1.0.0" else _STORE.resume(version)
    if staging is None:
        return
    try:
        staging.put(n, data)
    except ModelUpdateError as exc:
        assert exc.reason == "bad_chunk"
    else:
        assert len(data) == staging.offer.chunk_len(n)
    assert staging.path.resolve().is_relative_to(_STORE.staging_dir.resolve())


# --------------------------------------------------------------------------- serial frames


def _good_frame(seq: int) -> bytes:
    return encode_frame(Frame(device_id=7, seq=seq, timestamp_ms=seq * 10,
                              message=Data(n_channels=2, values=(1.0, float(seq)),
                                           period_us=0)))


@FUZZ
@given(st.lists(st.one_of(st.integers(0, 1), st.binary(max_size=1200)), max_size=12),
       st.integers(1, 64))
def test_serial_frames_garbage_between_good_frames(parts: list[int | bytes], cut: int) -> None:
    TRIED["serial_frames"] += 1
    stream = b""
    good: list[int] = []
    seq = 0
    for part in parts:
        if isinstance(part, int) and part == 1:
            stream += _good_frame(seq)
            good.append(seq)
            seq += 1
        elif isinstance(part, bytes):
            stream += part + b"\x00"  # garbage, then a delimiter (resync)
        else:
            stream += encode_frame(Frame(device_id=9, seq=seq, timestamp_ms=0,
                                         message=Heartbeat(tx_dropped=seq)))
            seq += 1
    dec = FrameDecoder()
    frames = []
    for i in range(0, len(stream), cut):  # the bytes arrive in arbitrary pieces
        frames += dec.feed(stream[i:i + cut])
    # every good frame survives whatever garbage surrounds it (garbage could only pass
    # as a frame with a valid CRC-32)
    assert set(good) <= {f.seq for f in frames if f.device_id == 7}
    st_ = dec.stats()
    assert st_["frames_ok"] == len(frames)


@FUZZ
@given(st.binary(max_size=1500))
def test_serial_ascii_lines_never_raise(data: bytes) -> None:
    TRIED["serial_ascii"] += 1
    p = AsciiLineParser(channels=("a", "b"))
    samples = p.feed(data + b"\n1000,1.5,2.5\n")
    assert samples and samples[-1].values == {"a": 1.5, "b": 2.5}


# --------------------------------------------------------------------------- replay CSV

_CSV_DIR = Path(tempfile.mkdtemp(prefix="fuzz-csv-"))


_LINE_BREAKS = "\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


@FUZZ
@given(st.lists(st.one_of(st.tuples(epoch, finite, finite),
                          st.text(st.characters(codec="utf-8",
                                                exclude_characters=_LINE_BREAKS),
                                  max_size=20)), max_size=15),
       st.sampled_from([",", ";"]))
def test_replay_csv_files(rows: list[Any], sep: str) -> None:
    TRIED["replay_csv"] += 1
    lines = [f"timestamp{sep}a{sep}b"]
    good = []
    for r in rows:
        if isinstance(r, tuple):
            lines.append(sep.join(repr(x) for x in r))
            good.append(r)
        elif r.strip():
            lines.append(r)
    path = _CSV_DIR / "t.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    try:
        table = read_table(path)
    except InputError:
        assert not good  # only a file with no usable row at all is refused
        return
    ok = [i for i, ts in enumerate(table.ts) if not math.isnan(ts) and table.present[i].all()]
    assert len(ok) >= len(good)
    assert len(table.ts) == sum(1 for ln in lines[1:] if ln.strip())


@FUZZ
@given(st.binary(max_size=600))
def test_replay_csv_arbitrary_bytes(data: bytes) -> None:
    TRIED["replay_csv_bytes"] += 1
    path = _CSV_DIR / "b.csv"
    path.write_bytes(data)
    with contextlib.suppress(InputError):
        read_table(path)


def test_jsonsafe_turns_recursion_into_value_error() -> None:
    with pytest.raises(ValueError, match="nested too deeply"):
        loads_json("[" * 100_000)
