"""River's two anomaly detectors the agent uses, imported without River's heavy packages.

``from river import anomaly`` runs ``river/anomaly/__init__.py``, which imports every
River detector; through ``river.anomaly.filter`` -> ``river.stats`` and ``river.tree``'s
``__init__`` (every Hoeffding tree, ``river.datasets``) that pulls in ``scipy.special``,
``scipy.sparse``, ``scipy.spatial`` and scikit-learn, and ``river.utils`` pulls in
narwhals and scipy: about +95 MB RSS and 2.5 s of CPU at import, for two small
pure-Python classes (``benchmarks/bench_memory.py`` measures both ways).

:func:`anomaly_classes` imports only ``river.anomaly.hst`` and ``river.anomaly.loda``
and the modules those two import (``river.base``, ``river.sketch``, ``river.tree.base``,
``river.tree.padded``): for the duration of the import a bare package object stands in
for ``river.anomaly``, ``river.tree`` and ``river.utils``, whose ``__init__`` is not
run. A module that keeps a reference to a stand-in (``river.tree.base`` does ``from
river import utils``) gets every attribute from the real package, imported on first use.
The stand-ins are removed afterwards, so a later ``import river.anomaly`` runs the real
``__init__``, which finds the two submodules already imported: the classes are the very
same objects (pickled checkpoints and ``isinstance`` see no difference) and the models
behave identically, seed for seed. (One form is not supported after it: ``import
river.tree.base as x`` without importing ``river.tree`` first.)
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from typing import Any, NamedTuple

# Packages whose __init__ imports far more than the two detectors need.
_HEAVY_PACKAGES = ("river.anomaly", "river.tree", "river.utils")
_lock = threading.Lock()


class AnomalyClasses(NamedTuple):
    HalfSpaceTrees: Any
    LODA: Any


def _bare_package(name: str) -> types.ModuleType | None:
    """A package object for ``name`` without running its ``__init__``.

    Modules imported while it stands in may keep a reference to it (``from river import
    utils``); any attribute they look up later is served by the real package, imported
    then (PEP 562 module ``__getattr__``), so they behave as with the real one.
    """
    spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None:
        return None
    module = types.ModuleType(name)
    module.__path__ = list(spec.submodule_search_locations)
    module.__spec__ = spec
    module.__package__ = name

    def __getattr__(attr: str) -> Any:
        real = importlib.import_module(name)
        if real is module:  # still standing in: a genuinely missing attribute
            raise AttributeError(f"module {name!r} has no attribute {attr!r}")
        return getattr(real, attr)

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    return module


def anomaly_classes() -> AnomalyClasses:
    """``HalfSpaceTrees`` and ``LODA`` from River, importing only their own modules."""
    with _lock:
        done = sys.modules.get("river.anomaly.hst"), sys.modules.get("river.anomaly.loda")
        if done[0] is not None and done[1] is not None:
            return AnomalyClasses(done[0].HalfSpaceTrees, done[1].LODA)
        import river  # noqa: F401  (the top-level package itself is light)

        stand_ins: dict[str, types.ModuleType] = {}
        for name in _HEAVY_PACKAGES:
            if name in sys.modules:
                continue  # already imported for real: nothing to save
            bare = _bare_package(name)
            if bare is not None:
                sys.modules[name] = stand_ins[name] = bare
        try:
            hst = importlib.import_module("river.anomaly.hst")
            loda = importlib.import_module("river.anomaly.loda")
        except Exception:  # a River release whose modules need more: the plain import
            hst = loda = None
            for name in ("river.anomaly.hst", "river.anomaly.loda"):
                sys.modules.pop(name, None)
        finally:
            for name, bare in stand_ins.items():
                if sys.modules.get(name) is bare:
                    del sys.modules[name]
                # Importing ``a.b.c`` also made ``b`` an attribute of ``a``: undo that too,
                # so ``river.anomaly`` resolves through a real import later.
                parent, _, child = name.rpartition(".")
                if getattr(sys.modules.get(parent), child, None) is bare:
                    delattr(sys.modules[parent], child)
        if hst is None or loda is None:
            from river import anomaly

            return AnomalyClasses(anomaly.HalfSpaceTrees, anomaly.LODA)
        return AnomalyClasses(hst.HalfSpaceTrees, loda.LODA)
