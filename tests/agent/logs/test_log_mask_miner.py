"""Masking of variable fields and the Drain-style template miner: grouping, bounds, ids."""

from __future__ import annotations

import pytest

from agent.logs.mask import mask
from agent.logs.miner import WILDCARD, LineRejected, TemplateMiner, template_id


@pytest.mark.parametrize(("message", "masked"), [
    ("took 123 ms", "took <NUM> ms"),
    ("took 123.", "took <NUM>."),
    ("pid=4711 exit=-1", "pid=<NUM> exit=<NUM>"),
    ("value 1.5e-3 and 1,234,567", "value <NUM> and <NUM>"),
    ("from 10.0.0.7:5020,", "from <IP>,"),
    ("not an ip 300.1.2.3", "not an ip 300.1.2.3"),
    ("v6 fe80::1ff:fe23:4567:890a and ::1 and [2001:db8::2]:443",
     "v6 <IP> and <IP> and <IP>"),
    ("job 3f2b1c9e-0c1d-4e5f-8a9b-0123456789ab done", "job <UUID> done"),
    ("handle 0x7fa3c0 blk deadbeef42 word facade", "handle <HEX> blk <HEX> word facade"),
    ("mac 00:1a:2b:3c:4d:5e up", "mac <HEX> up"),
    ("open /var/lib/db/x.sqlite and ./rel/a.txt and C:\\Temp\\a.log",
     "open <PATH> and <PATH> and <PATH>"),
    ("after 12ms then 1.5s then 3min", "after <DUR> then <DUR> then <DUR>"),
    ("sent 4.5KiB and 12MB and 100B", "sent <SIZE> and <SIZE> and <SIZE>"),
    ("at 2024-01-02T03:04:05.123+01:00 and 12:30:45", "at <TS> and <TS>"),
    ("GET https://plc.local/api/v1?id=3 200", "GET <URL> <NUM>"),
    ("version v1.2.3 of x86_64", "version v1.2.3 of x86_64"),
    ("plain words only", "plain words only"),
])
def test_mask(message: str, masked: str) -> None:
    assert mask(message) == masked


def test_lines_differing_in_fields_share_a_template() -> None:
    m = TemplateMiner(similarity=0.5)
    a = m.add("Disk write of 4KiB to /var/x/1.db failed after 12ms on 10.0.0.1")
    b = m.add("Disk write of 9MB to /srv/y/2.db failed after 1.5s on 10.9.9.9")
    assert a.created and not b.created and a.cluster_id == b.cluster_id
    assert b.template == "Disk write of <SIZE> to <PATH> failed after <DUR> on <IP>"
    assert not b.changed  # masking alone made them equal


def test_words_that_vary_become_wildcards_and_the_id_stays() -> None:
    m = TemplateMiner(similarity=0.5)
    a = m.add("login of user alice from 10.0.0.1 ok")
    b = m.add("login of user bob from 10.0.0.2 ok")
    assert b.cluster_id == a.cluster_id and b.changed
    assert b.template == f"login of user {WILDCARD} from <IP> ok"
    assert m.add("login of user carol from 10.0.0.3 ok").template == b.template
    # the id is the hash of the first message's tokens, not of the current template
    assert a.cluster_id == template_id(["login", "of", "user", "alice", "from", "<IP>", "ok"])


def test_different_messages_get_different_templates() -> None:
    m = TemplateMiner(similarity=0.6)
    ids = {m.add(msg).cluster_id for msg in (
        "pump 3 started at 1200 rpm", "pump 4 stopped by operator",
        "valve V1 opened", "heartbeat seq=5", "pump 3 started at 900 rpm")}
    assert len(ids) == 4
    assert len(m.clusters) == 4


def test_same_input_same_ids_in_another_miner() -> None:
    msgs = [f"task {i} of user u{i % 3} took {i}ms" for i in range(50)] + [
        f"cache miss for key k{i}" for i in range(20)]
    a, b = TemplateMiner(), TemplateMiner()
    assert [a.add(x).cluster_id for x in msgs] == [b.add(x).cluster_id for x in msgs]


def test_bounded_clusters_lru_eviction_and_pruned_tree() -> None:
    m = TemplateMiner(similarity=0.9, max_clusters=10, max_children=4)
    first = m.add("alpha event happened here").cluster_id
    for i in range(200):
        words = " ".join(f"w{i}x{j}" if j else f"k{chr(97 + i % 26)}{i // 26}"
                         for j in range(3))
        m.add(f"{words} unique{chr(97 + i % 26)} tail")
        if i % 5 == 0:
            assert m.add("alpha event happened here").cluster_id == first  # kept: recent
        assert len(m.clusters) <= 10
    assert m.evicted > 150
    # the tree holds no branch for evicted clusters: depth-4 paths, <= 10 leaves
    assert m.node_count() <= 1 + 10 * 3
    # the same first message after eviction gets its old id back
    victim = "kz0 w0x1 w0x2 uniquea tail"
    assert m.match(victim) is None
    assert m.add(victim).cluster_id == template_id(victim.split())


def test_max_children_sends_new_tokens_down_the_wildcard_branch() -> None:
    m = TemplateMiner(similarity=0.5, max_children=3)
    for w in ("a", "b", "c", "d", "e"):
        m.add(f"{w} thing happened now")
    root_len = m._root.children["4"]
    assert len(root_len.children) == 3 and WILDCARD in root_len.children  # a, b, <*>
    assert m.match("e thing happened now") is not None


def test_limits_are_rejections_with_reasons() -> None:
    m = TemplateMiner(max_tokens=5, max_chars=40)
    with pytest.raises(LineRejected) as e1:
        m.add("a b c d e f")
    with pytest.raises(LineRejected) as e2:
        m.add("x" * 41)
    with pytest.raises(LineRejected) as e3:
        m.add("   ")
    assert (e1.value.reason, e2.value.reason, e3.value.reason) == (
        "too_many_tokens", "line_too_long", "empty_message")
    assert not m.clusters


def test_state_round_trip_keeps_templates_ids_and_lru_order() -> None:
    m = TemplateMiner(max_clusters=50)
    for i in range(30):
        m.add(f"event kind{i % 7} from node {i}")
        m.add(f"other kind{i % 3} thing number {i} at 10.0.0.{i}")
    n = TemplateMiner(max_clusters=50)
    n.load_state(m.state_dict())
    assert list(n.clusters) == list(m.clusters)
    assert [c.template for c in n.clusters.values()] == [c.template
                                                          for c in m.clusters.values()]
    probe = "event kind3 from node 99"
    assert n.add(probe).cluster_id == m.add(probe).cluster_id
    with pytest.raises(ValueError, match="parameters"):
        TemplateMiner(depth=5).load_state(m.state_dict())
