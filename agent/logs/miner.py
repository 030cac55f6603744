"""A Drain-style template miner with bounded memory and stable template ids.

Drain (He et al., ICWS 2017) groups log messages with a fixed-depth parse tree: the
first level keys on the number of tokens, the next ``depth - 2`` levels on the first
tokens (a token with a digit or a placeholder goes down the ``<*>`` branch, and so does
any token once a node has ``max_children`` children), and a leaf holds a few clusters.
A message joins the leaf's most similar cluster (share of positions where the template
token equals the message token or is ``<*>``; ties go to the more specific template)
when that share reaches ``similarity``; positions that differ then become ``<*>``.
Otherwise it starts a new cluster.

This implementation:

* masks variable fields first (:mod:`agent.logs.mask`), so ``<IP>``/``<NUM>`` ... are
  ordinary tokens that already agree;
* bounds memory: at most ``max_clusters`` clusters (the least recently matched is
  evicted, its tree branch pruned), ``max_tokens`` tokens and ``max_chars`` characters
  per message (longer ones are refused, the caller counts them);
* gives every cluster an id derived from the message that created it
  (``T`` + 10 hex digits of its BLAKE2b hash): the same first message gives the same id
  on every gateway and after a restart, and a template evicted and seen again gets its
  old id back. The id stays when the template gains wildcards.

>>> m = TemplateMiner(similarity=0.5)
>>> a = m.add("login of user alice from 10.0.0.1")
>>> b = m.add("login of user bob from 10.0.0.2")
>>> a.cluster_id == b.cluster_id, b.template, b.changed
(True, 'login of user <*> from <IP>', True)
>>> m.add("disk full on /var/lib/db").cluster_id != a.cluster_id
True
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from agent.logs.mask import MASK_VERSION, PLACEHOLDERS, mask_tokens

WILDCARD = "<*>"
_PLACEHOLDERS = frozenset(PLACEHOLDERS)


class LineRejected(ValueError):
    """A message the miner refuses; ``reason`` is the counter key."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(slots=True)
class Cluster:
    """One template: its tokens (with ``<*>``), id and how many messages it took."""

    cluster_id: str
    tokens: list[str]
    size: int = 1
    path: tuple[str, ...] = ()  # tree keys of its leaf

    @property
    def template(self) -> str:
        return " ".join(self.tokens)


@dataclass(frozen=True, slots=True)
class MatchResult:
    cluster_id: str
    template: str
    created: bool
    changed: bool  # the template gained a wildcard


def template_id(tokens: list[str]) -> str:
    """Stable id of a cluster created from ``tokens``."""
    h = hashlib.blake2b("\x1f".join(tokens).encode("utf-8", "replace"), digest_size=5)
    return "T" + h.hexdigest()


_has_digit = re.compile(r"\d").search


class _Node:
    __slots__ = ("children", "clusters")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.clusters: list[str] = []


class TemplateMiner:
    """Drain-style online template mining; see the module docstring."""

    def __init__(self, depth: int = 4, similarity: float = 0.5, max_children: int = 100,
                 max_clusters: int = 2000, max_tokens: int = 200,
                 max_chars: int = 4096) -> None:
        if depth < 3:
            raise ValueError(f"depth must be >= 3, got {depth}")
        if not 0 < similarity <= 1:
            raise ValueError(f"similarity must be in (0, 1], got {similarity}")
        if max_children < 2 or max_clusters < 1 or max_tokens < 1 or max_chars < 1:
            raise ValueError("max_children >= 2, max_clusters, max_tokens, max_chars >= 1")
        self.depth = depth
        self.similarity = similarity
        self.max_children = max_children
        self.max_clusters = max_clusters
        self.max_tokens = max_tokens
        self.max_chars = max_chars
        self._root = _Node()
        self.clusters: OrderedDict[str, Cluster] = OrderedDict()  # LRU order, oldest first
        self.evicted = 0

    # ------------------------------------------------------------------ tree
    def _path(self, tokens: list[str]) -> list[str]:
        """Keys from the root to the leaf for ``tokens`` (length, then first tokens)."""
        keys = [str(len(tokens))]
        for tok in tokens[: self.depth - 2]:
            keys.append(WILDCARD if tok in _PLACEHOLDERS or _has_digit(tok) else tok)
        return keys

    def _full(self, node: _Node) -> bool:
        """No room for another token branch (one place is kept for ``<*>``)."""
        n = len(node.children)
        return n >= (self.max_children if WILDCARD in node.children else self.max_children - 1)

    def _leaf(self, keys: list[str], create: bool) -> tuple[_Node | None, tuple[str, ...]]:
        """The leaf for ``keys`` and the keys actually taken (``<*>`` where a node was full
        or, without ``create``, where the token has no branch of its own)."""
        node, used = self._root, []
        for i, key in enumerate(keys):
            child = node.children.get(key)
            if child is None and i > 0 and (not create or self._full(node)):
                key = WILDCARD
                child = node.children.get(key)
            if child is None:
                if not create:
                    return None, tuple(used)
                child = node.children[key] = _Node()
            used.append(key)
            node = child
        return node, tuple(used)

    # ------------------------------------------------------------------ matching
    @staticmethod
    def _similarity(template: list[str], tokens: list[str]) -> tuple[float, int]:
        same = wild = 0
        for t, m in zip(template, tokens, strict=True):
            if t == WILDCARD:
                wild += 1
            elif t == m:
                same += 1
        return (same + wild) / len(tokens), same

    def _best(self, leaf: _Node, tokens: list[str]) -> Cluster | None:
        best: Cluster | None = None
        best_key = (-1.0, -1)
        for cid in leaf.clusters:
            c = self.clusters[cid]
            key = self._similarity(c.tokens, tokens)
            if key > best_key:
                best, best_key = c, key
        if best is None or best_key[0] < self.similarity:
            return None
        return best

    def tokenize(self, message: str) -> list[str]:
        """Masked tokens of ``message``; raise :class:`LineRejected` beyond the bounds."""
        if len(message) > self.max_chars:
            raise LineRejected("line_too_long", f"{len(message)} characters > {self.max_chars}")
        tokens = mask_tokens(message)
        if not tokens:
            raise LineRejected("empty_message", "no tokens")
        if len(tokens) > self.max_tokens:
            raise LineRejected("too_many_tokens", f"{len(tokens)} tokens > {self.max_tokens}")
        return tokens

    def add(self, message: str) -> MatchResult:
        """Mine one message (learns); the cluster it joined or created."""
        tokens = self.tokenize(message)
        leaf, _ = self._leaf(self._path(tokens), create=False)
        c = None if leaf is None else self._best(leaf, tokens)
        if c is None:
            leaf, path = self._leaf(self._path(tokens), create=True)
            assert leaf is not None
            return self._create(leaf, path, tokens)
        changed = False
        for i, (t, m) in enumerate(zip(c.tokens, tokens, strict=True)):
            if t != m and t != WILDCARD:
                c.tokens[i] = WILDCARD
                changed = True
        c.size += 1
        self.clusters.move_to_end(c.cluster_id)
        return MatchResult(c.cluster_id, c.template, False, changed)

    def match(self, message: str) -> Cluster | None:
        """The cluster ``message`` would join, without learning (``None``: a new template)."""
        tokens = self.tokenize(message)
        leaf, _ = self._leaf(self._path(tokens), create=False)
        return None if leaf is None else self._best(leaf, tokens)

    def _create(self, leaf: _Node, path: tuple[str, ...], tokens: list[str]) -> MatchResult:
        cid = template_id(tokens)
        old = self.clusters.get(cid)
        if old is not None:  # its first message again, routed elsewhere (a node filled up)
            old.size += 1
            self.clusters.move_to_end(cid)
            return MatchResult(cid, old.template, False, False)
        c = Cluster(cid, list(tokens), 1, path)
        self.clusters[cid] = c
        leaf.clusters.append(cid)
        while len(self.clusters) > self.max_clusters:
            _, victim = self.clusters.popitem(last=False)
            self._unlink(victim)
            self.evicted += 1
        return MatchResult(cid, c.template, True, False)

    def _unlink(self, c: Cluster) -> None:
        """Remove ``c`` from its leaf and prune branches left empty."""
        keys = c.path
        nodes = [self._root]
        for key in keys:
            nxt = nodes[-1].children.get(key)
            if nxt is None:
                return
            nodes.append(nxt)
        leaf = nodes[-1]
        if c.cluster_id in leaf.clusters:
            leaf.clusters.remove(c.cluster_id)
        for depth in range(len(keys), 0, -1):
            node = nodes[depth]
            if node.clusters or node.children:
                break
            del nodes[depth - 1].children[keys[depth - 1]]

    def template_of(self, cluster_id: str) -> str | None:
        c = self.clusters.get(cluster_id)
        return c.template if c is not None else None

    def node_count(self) -> int:
        stack, n = [self._root], 0
        while stack:
            node = stack.pop()
            n += 1
            stack.extend(node.children.values())
        return n

    # ------------------------------------------------------------------ state
    def params(self) -> dict[str, Any]:
        return {"mask_version": MASK_VERSION, "depth": self.depth, "similarity": self.similarity,
                "max_children": self.max_children, "max_tokens": self.max_tokens,
                "max_chars": self.max_chars}

    def state_dict(self) -> dict[str, Any]:
        """Plain JSON-able state: the clusters in LRU order (the tree is rebuilt)."""
        return {"params": self.params(), "evicted": self.evicted,
                "clusters": [[c.cluster_id, c.tokens, c.size] for c in self.clusters.values()]}

    def load_state(self, state: dict[str, Any]) -> None:
        """Replace the clusters with ``state``'s; raise ValueError if it is malformed."""
        if not isinstance(state, dict) or not isinstance(state.get("clusters"), list):
            raise ValueError("state has no cluster list")
        if state.get("params") != self.params():
            raise ValueError("miner parameters changed since the state was written")
        evicted = state.get("evicted", 0)
        if not isinstance(evicted, int) or evicted < 0:
            raise ValueError("bad eviction count")
        fresh = TemplateMiner(self.depth, self.similarity, self.max_children,
                              self.max_clusters, self.max_tokens, self.max_chars)
        for item in state["clusters"][-self.max_clusters:]:
            if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str)
                    and isinstance(item[1], list) and 1 <= len(item[1]) <= self.max_tokens
                    and all(isinstance(t, str) and t and not any(ch.isspace() for ch in t)
                            for t in item[1])
                    and isinstance(item[2], int) and item[2] >= 1
                    and len(item[0]) <= 64 and item[0] not in fresh.clusters):
                raise ValueError(f"bad cluster entry {str(item)[:80]}")
            cid, tokens, size = item
            leaf, path = fresh._leaf(fresh._path(tokens), create=True)
            assert leaf is not None
            fresh.clusters[cid] = Cluster(cid, list(tokens), size, path)
            leaf.clusters.append(cid)
        self._root, self.clusters, self.evicted = fresh._root, fresh.clusters, evicted
