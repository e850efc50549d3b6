"""The module paths of version 0.1, kept working as aliases of their new homes.

``import tensorstate_callbacks.states`` (for example) gives the very module
object of ``tensorstate_callbacks.core.packing``, so what it holds, and what a
test patches on it, is the same.  The paths users write most
(``.torch``, ``.keras``, ``.lightning``, ``.lenet5_torch``, ``.lenet5_keras``)
are real modules of the package root instead, which editors can follow.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

# old path (under tensorstate_callbacks.) -> new path
ALIASES = {
    "states": "core.packing",
    "capture": "core.counter",
    "metrics": "core.metrics",
    "storage": "core.storage",
    "gpu": "core._cuda",
    "frameworks": "integrations._dispatch",
    "distributed": "integrations.distributed",
    "keras_callback": "integrations.keras.callback",
    "report": "reporting.report",
    "tensorboard": "reporting.tensorboard",
    "events": "reporting.events",
    "datasets": "cli.demos.datasets",
}
_PACKAGE = __name__.rpartition(".")[0]


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old path and loads it as the module at its new path."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.rpartition(".")
        if package != _PACKAGE or name not in ALIASES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        module = importlib.import_module(f"{_PACKAGE}.{ALIASES[spec.name.rpartition('.')[2]]}")
        spec.loader_state = module.__spec__  # its own spec, restored by exec_module
        return module

    def exec_module(self, module):
        # The import system gave the module the alias's spec: give it back its
        # own (it was already executed at its real path).
        module.__spec__ = module.__spec__.loader_state


def install() -> None:
    """Register the aliases (once).

    Example:
        >>> import tensorstate_callbacks.states, tensorstate_callbacks.core.packing
        >>> tensorstate_callbacks.states is tensorstate_callbacks.core.packing
        True
    """
    if not any(isinstance(finder, _AliasFinder) for finder in sys.meta_path):
        sys.meta_path.append(_AliasFinder())
