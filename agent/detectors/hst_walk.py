"""Score and learn one point with River's HalfSpaceTrees in a single walk per tree.

River's ``score_one`` walks each tree from the root along the point's path, adding
``r_mass * 2**depth`` until a node's reference mass falls below ``0.1 * window_size``;
``learn_one`` walks the same path again to add 1 to every node's latest-window mass
``l_mass``, then counts the point and, once a window is complete, turns the latest masses
into the reference masses. The score reads only ``r_mass`` and the path depends only on
the fixed split thresholds (every feature is present: the stage always sends all its
channels), so one walk that does both gives exactly ``score_one(x)`` followed by
``learn_one(x)``: the same score, bit for bit, and the same tree state. Stage 2 uses it
for the points whose score it only needs for calibration (half of a bare score + learn).

The walk reads River's own tree nodes (``children``, ``feature``, ``threshold``,
``l_mass``, ``r_mass``) and the model's ``trees``, ``_tree_nodes``, ``counter`` and
``_first_window``, as in River >= 0.26; :func:`supports` checks that a model has them
(and that its trees are built), and callers fall back to River's two calls otherwise.
``tests/agent/test_hst_walk.py`` checks the equivalence against River on real streams.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping
from typing import Any

_MODEL_ATTRS = ("trees", "_tree_nodes", "counter", "_first_window", "height", "window_size",
                "n_trees")
_NODE_ATTRS = ("children", "feature", "threshold", "l_mass", "r_mass")


def supports(model: Any) -> bool:
    """True when ``model`` is a River HalfSpaceTrees whose trees are built and laid out
    as :func:`score_learn` expects (else use ``score_one`` + ``learn_one``)."""
    if not all(hasattr(model, a) for a in _MODEL_ATTRS) or not model.trees:
        return False
    root = model.trees[0]
    return (
        len(model._tree_nodes) == len(model.trees)
        and all(hasattr(root, a) for a in _NODE_ATTRS)
        and isinstance(root.l_mass, int)
        and len(root.children) == 2
    )


def prebuilt(model: Any, features: Iterable[str]) -> Any:
    """``model`` with its trees already built for ``features``, or ``model`` itself.

    River builds a HalfSpaceTrees' trees inside its first ``learn_one`` (10 trees of
    height 8: ~50-200 ms of CPU), so the first point of a stream would wait for them, and
    every point queued behind it. Building them when the stream is set up moves that
    work to start-up: River's own ``learn_one`` of a point at the centre of every feature,
    on a copy, then taken back (:func:`unwalk` and the counter). The trees depend only on
    the sorted feature names and the model's seeded generator, which nothing else draws
    from, so they are the trees the first real point would have built. A model this module
    does not know, or one already fed, is returned unchanged (its trees come lazily).
    """
    if (not all(hasattr(model, a) for a in _MODEL_ATTRS) or model.trees or model.counter
            or model.window_size < 2):
        return model
    out = copy.deepcopy(model)
    x = dict.fromkeys(features, 0.5)
    out.learn_one(x)
    if not supports(out) or out.counter != 1:
        return model
    unwalk(out, x)
    out.counter = 0
    return out


def score_walk(model: Any, x: Mapping[str, float], learn: bool) -> float:
    """``model.score_one(x)``; with ``learn``, the same walk also adds ``x`` to the latest
    masses (the first half of ``learn_one(x)``: finish with :func:`count`, or take it
    back with :func:`unwalk`; nothing may learn in between).

    ``model`` must pass :func:`supports` and ``x`` must hold every feature the trees
    split on.
    """
    if not learn:
        return model.score_one(x)
    height = model.height
    # River stops a score walk at an (integer) mass below 0.1 * window_size: the same as
    # below the ceiling of it. Scores are sums of integers far below 2**53, exact as floats
    # in River's order and as ints in any order.
    limit = math.ceil(0.1 * model.window_size)
    total = 0
    for root in model.trees:
        node = root
        weight = 1
        score = 0
        for depth in range(height):
            r = node.r_mass
            score += r * weight
            node.l_mass += 1
            c = node.children
            node = c[0] if x[node.feature] < node.threshold else c[1]
            if r < limit:  # River's score stops here; the learning goes on to the leaf
                for _ in range(height - depth - 1):
                    node.l_mass += 1
                    c = node.children
                    node = c[0] if x[node.feature] < node.threshold else c[1]
                break
            weight <<= 1
        else:
            score += node.r_mass * weight
        node.l_mass += 1  # (the leaf)
        total += score
    if model._first_window:
        return 0  # (as River: no reference window yet)
    return 1 - float(total) / model._max_score


def _add(node: Any, x: Mapping[str, float], levels: int, step: int) -> None:
    """Add ``step`` to the latest mass of ``node`` and of the ``levels`` nodes below it on
    ``x``'s path."""
    for _ in range(levels):
        node.l_mass += step
        c = node.children
        node = c[0] if x[node.feature] < node.threshold else c[1]
    node.l_mass += step


def count(model: Any) -> None:
    """Count one learnt point (the second half of ``learn_one``): once a window is
    complete, the latest masses become the reference masses."""
    model.counter += 1
    if model.counter == model.window_size:
        for nodes in model._tree_nodes:
            for node in nodes:
                node.r_mass = node.l_mass
                node.l_mass = 0
        model._first_window = False
        model.counter = 0


def unwalk(model: Any, x: Mapping[str, float]) -> None:
    """Take back a ``score_walk(model, x, learn=True)`` that :func:`count` did not
    finish."""
    height = model.height
    for root in model.trees:
        _add(root, x, height, -1)


def score_learn(model: Any, x: Mapping[str, float]) -> float:
    """``model.score_one(x)`` then ``model.learn_one(x)``, in one walk per tree."""
    s = score_walk(model, x, True)
    count(model)
    return s
