"""River's HalfSpaceTrees, built when a stream is set up, and checked for the layout
:mod:`agent.detectors.hst_flat` mirrors.

The functions read River's own tree nodes (``children``, ``feature``, ``threshold``,
``l_mass``, ``r_mass``) and the model's ``trees``, ``_tree_nodes``, ``counter`` and
``_first_window``, as in River >= 0.26; :func:`supports` checks that a model has them
(and that its trees are built), and callers fall back to River's own calls otherwise.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

_MODEL_ATTRS = ("trees", "_tree_nodes", "counter", "_first_window", "height", "window_size",
                "n_trees")
_NODE_ATTRS = ("children", "feature", "threshold", "l_mass", "r_mass")


def supports(model: Any) -> bool:
    """True when ``model`` is a River HalfSpaceTrees whose trees are built and laid out
    as :class:`~agent.detectors.hst_flat.FlatHST` expects (else use River's calls)."""
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


def _add(node: Any, x: Mapping[str, float], levels: int, step: int) -> None:
    """Add ``step`` to the latest mass of ``node`` and of the ``levels`` nodes below it on
    ``x``'s path."""
    for _ in range(levels):
        node.l_mass += step
        c = node.children
        node = c[0] if x[node.feature] < node.threshold else c[1]
    node.l_mass += step


def unwalk(model: Any, x: Mapping[str, float]) -> None:
    """Take back the masses ``learn_one(x)`` added (not its count)."""
    height = model.height
    for root in model.trees:
        _add(root, x, height, -1)
