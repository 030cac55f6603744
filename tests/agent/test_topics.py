"""Topic tree, id validation and wildcard routing."""

from __future__ import annotations

import pytest

from agent.topics import Route, Router, TopicTree, check_id, matches, validate_filter


def test_tree_layout() -> None:
    t = TopicTree("edge", "plant-1", "gw_7")
    assert t.root == "edge/v1/plant-1/gw_7"
    assert t.status.endswith("/status") and t.birth.endswith("/birth")
    assert t.stats.endswith("/stats") and t.config_desired.endswith("/config/desired")
    assert t.config_reported.endswith("/config/reported")
    assert t.alert("line1") == "edge/v1/plant-1/gw_7/alert/line1"
    assert t.command_response("ping") == "edge/v1/plant-1/gw_7/cmd/ping/res"
    assert t.command_name(t.command("flush")) == "flush"
    assert t.command_name(t.command_response("flush")) is None
    assert t.command_name("other/cmd/ping") is None


@pytest.mark.parametrize("bad", ["", "a/b", "a+b", "#", "x" * 65, "é", "a b"])
def test_ids_are_restricted(bad: str) -> None:
    with pytest.raises(ValueError):
        check_id("site", bad)
    with pytest.raises(ValueError):
        TopicTree("edge", bad, "gw")


@pytest.mark.parametrize(
    ("flt", "topic", "ok"),
    [("a/b", "a/b", True), ("a/+", "a/b", True), ("a/+", "a/b/c", False),
     ("a/#", "a", True), ("a/#", "a/b/c", True), ("+/+", "a", False), ("#", "$SYS/x", False),
     ("a/+/c", "a/b/c", True), ("a/+/c", "a/b/d", False)],
)
def test_matches(flt: str, topic: str, ok: bool) -> None:
    assert matches(flt, topic) is ok


@pytest.mark.parametrize("bad", ["", "a/#/b", "a/b#", "a/+b", "x\0"])
def test_bad_filters(bad: str) -> None:
    with pytest.raises(ValueError):
        validate_filter(bad)


def test_router_first_match_and_fallback() -> None:
    r = Router([Route("s/line1/#", "line1", "csv"), Route("s/+/+")])
    assert r.route("s/line1/x").format == "csv"
    assert r.route("s/pump/raw").stream is None
    assert Router.fallback_stream("s/pump/raw") == "raw"
    assert Router.fallback_stream("s/pump/bad level") is None
    assert r.route("t/x") is None
