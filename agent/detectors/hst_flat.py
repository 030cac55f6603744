"""River's HalfSpaceTrees as arrays: the same scores and tree state, learnt in batches.

A HalfSpaceTrees' trees never change shape after they are built: only two masses per
node do. ``score_one`` reads the *reference* masses ``r_mass`` along the point's path
(adding ``r_mass * 2**depth`` until a mass falls below ``0.1 * window_size``);
``learn_one`` adds 1 to the *latest* mass ``l_mass`` of every node on the path, and once
``window_size`` points are learnt the latest masses become the reference masses. So,
with every feature present (stage 2 always sends all its channels):

* a score depends only on the point, the split thresholds and ``r_mass``, which changes
  only at a window's end;
* the learning of the points of one window can wait until that window ends, and then be
  done for all of them at once: one vectorised walk of ``rows x trees`` paths and one
  ``bincount`` into ``l_mass``.

:class:`FlatHST` keeps a River model's masses in arrays in heap order (node ``i`` has
children ``2i + 1`` and ``2i + 2``), scores one point in plain Python over lists (the
points stage 2 escalates) or many at once in numpy (calibration samples), and learns
batches of points. River's own objects stay the model of record for checkpoints:
:meth:`FlatHST.to_river` writes the masses and the window counter back into River's nodes,
and a FlatHST is built from River's nodes. ``tests/agent/test_hst_flat.py`` checks scores
and masses against River's ``score_one`` / ``learn_one``, bit for bit.

Scores are sums of integers far below 2**53, exact as floats in River's order and as
integers in any order, so ``1 - total / max_score`` is River's score to the last bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from agent.detectors import hst_walk


def supports(model: Any, features: Sequence[str]) -> bool:
    """True when ``model`` is a River HalfSpaceTrees, built, laid out as River >= 0.26
    does it, splitting only on ``features`` (then :class:`FlatHST` can mirror it)."""
    if not hst_walk.supports(model):
        return False
    names = set(features)
    return all(getattr(n, "feature", None) in names
               for nodes in model._tree_nodes for n in nodes if getattr(n, "children", None))


class FlatHST:
    """The masses of one River HalfSpaceTrees in arrays (see the module docstring)."""

    def __init__(self, model: Any, features: Sequence[str]) -> None:
        if not supports(model, features):
            raise ValueError("not a built River HalfSpaceTrees over these features")
        self.model = model
        self.height = h = int(model.height)
        self.n_trees = t = len(model.trees)
        self.window = int(model.window_size)
        self.max_score = model._max_score
        # River stops a score walk at an (integer) mass below 0.1 * window_size: the same
        # as below the ceiling of it.
        self.limit = math.ceil(0.1 * self.window)
        self.n_nodes = n = 2 ** (h + 1) - 1
        inner = 2**h - 1
        col = {f: i for i, f in enumerate(features)}
        self._nodes: list[list[Any]] = []  # River's nodes in heap order, per tree
        feat = np.zeros((t, inner), dtype=np.int64)
        thr = np.zeros((t, inner))
        for k, root in enumerate(model.trees):
            order = [root]
            for i in range(inner):  # breadth first: node i's children are 2i + 1, 2i + 2
                node = order[i]
                feat[k, i] = col[node.feature]
                thr[k, i] = node.threshold
                order += node.children
            self._nodes.append(order)
        self._feat, self._thr = feat, thr
        self._feat_l = feat.tolist()
        self._thr_l = thr.tolist()
        self.r = np.array([[nd.r_mass for nd in order] for order in self._nodes], dtype=np.int64)
        self.l = np.array([[nd.l_mass for nd in order] for order in self._nodes], dtype=np.int64)
        self._r_l = self.r.tolist()
        self.counter = int(model.counter)
        self.first_window = bool(model._first_window)
        self._base = (np.arange(t, dtype=np.int64) * n)[:, None]  # flat index of each root

    # ------------------------------------------------------------------ scoring
    def score(self, x: Sequence[float]) -> float:
        """River's ``score_one`` of the point with feature values ``x`` (in the order of
        the ``features`` this was built with)."""
        if self.first_window:
            return 0  # (as River: no reference window yet)
        limit, height = self.limit, self.height
        total = 0
        for f, t, r in zip(self._feat_l, self._thr_l, self._r_l, strict=True):
            node = 0
            weight = 1
            for _ in range(height):
                m = r[node]
                total += m * weight
                if m < limit:
                    break
                node = 2 * node + 1 if x[f[node]] < t[node] else 2 * node + 2
                weight <<= 1
            else:
                total += r[node] * weight
        return 1 - float(total) / self.max_score

    def _paths(self, z: np.ndarray) -> np.ndarray:
        """Flat indices into the mass arrays of the nodes on every row's path, root to
        leaf: ``(height + 1, trees, rows)``."""
        b, t = len(z), self.n_trees
        zt = np.ascontiguousarray(z.T).ravel()  # feature-major: value of (f, row) at f*b+row
        rows = np.arange(b, dtype=np.int64)
        feat, thr = self._feat.ravel(), self._thr.ravel()
        ibase = (np.arange(t, dtype=np.int64) * (2**self.height - 1))[:, None]
        node = np.zeros((t, b), dtype=np.int64)
        path = np.empty((self.height + 1, t, b), dtype=np.int64)
        path[0] = node
        for depth in range(self.height):
            i = ibase + node
            node = 2 * node + 1 + (zt[feat[i] * b + rows] >= thr[i])
            path[depth + 1] = node
        path += self._base
        return path

    def score_many(self, z: np.ndarray) -> np.ndarray:
        """:meth:`score` of every row of ``z`` (``(B, features)``), at once."""
        b = len(z)
        if self.first_window or b == 0:
            return np.zeros(b)
        m = self.r.ravel()[self._paths(z)]  # reference masses along each path
        # A node counts while every node above it on the path held at least the limit.
        reached = np.ones(m.shape, dtype=bool)
        np.logical_and.accumulate(m[:-1] >= self.limit, axis=0, out=reached[1:])
        depth = np.arange(self.height + 1, dtype=np.int64)[:, None, None]
        total = np.where(reached, m << depth, 0).sum(axis=(0, 1))
        return 1 - total / self.max_score

    # ------------------------------------------------------------------ learning
    def learn_many(self, z: np.ndarray) -> None:
        """River's ``learn_one`` of every row of ``z`` in order. The rows must not run
        past the end of the current window (``len(z) <= window - counter``)."""
        b = len(z)
        if b == 0:
            return
        if b > self.window - self.counter:
            raise ValueError(f"{b} rows run past the window ({self.window - self.counter} left)")
        n, t = self.n_nodes, self.n_trees
        self.l += np.bincount(self._paths(z).ravel(), minlength=t * n).reshape(t, n)
        self.counter += b
        if self.counter == self.window:  # River's pivot: latest masses become the reference
            self.r, self.l = self.l, np.zeros_like(self.l)
            self._r_l = self.r.tolist()
            self.first_window = False
            self.counter = 0

    # ------------------------------------------------------------------ River's objects
    def to_river(self) -> Any:
        """Write the masses and the window counter into River's model; returns it."""
        for order, rs, ls in zip(self._nodes, self.r.tolist(), self.l.tolist(), strict=True):
            for node, r, lm in zip(order, rs, ls, strict=True):
                node.r_mass = r
                node.l_mass = lm
        self.model.counter = self.counter
        self.model._first_window = self.first_window
        return self.model
