"""State probes for PyTorch modules: forward hooks that count states.

``build_efficiency_model(model, attach_to=["Conv2d"])`` hooks every matching
module; each hook is a :class:`StateCaptureHook` that reads the module's
output (``method="after"``) or input (``"before"``) and counts its states in
its own :class:`~tensorstate_callbacks.StateCounter`.  The hooks never change
what the model computes: they read a detached tensor and return nothing.
Where the tensor is packed (in place on the CPU; on its GPU otherwise) is
decided by :mod:`.devices`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

import torch

from ..core.counter import StateCounter
from ._probe import CountingProbe
from ._selection import METHODS, Site, check_method, select, torch_probe_name
from ._validation import check_neuron_axis
from .devices import count_tensor, pack_with_torch

__all__ = ["METHODS", "StateCaptureHook", "attach_probes", "build_efficiency_model",
           "default_neuron_axis",
           "find_modules", "pack_with_torch", "remove_efficiency_probes",
           "reset_efficiency_model"]
# Modules whose outputs keep features in the last dim, whatever their rank.
_FEATURES_LAST = ("Linear", "Bilinear", "Embedding", "Attention", "LayerNorm", "Transformer",
                  "RMSNorm", "GRU", "LSTM", "RNN")


def default_neuron_axis(module: torch.nn.Module, tensor: torch.Tensor) -> int:
    """The neuron axis of a tensor seen at ``module`` (see docs/state-space.md).

    Last dim for 1-D/2-D tensors and for Linear-like or attention modules;
    dim 1 (channels-first) for every other tensor of 3 or more dims.

    >>> default_neuron_axis(torch.nn.Conv2d(1, 4, 3), torch.zeros(2, 4, 5, 5))
    1
    >>> default_neuron_axis(torch.nn.Linear(3, 4), torch.zeros(2, 7, 4))
    -1
    """
    return _default_axis(type(module), tensor.dim())


@lru_cache(maxsize=256)  # bounded: torch.fx makes a class per GraphModule
def _default_axis(module_class: type, ndim: int) -> int:
    if ndim <= 2:
        return -1
    names = [cls.__name__ for cls in module_class.__mro__]
    if any(marker in name for name in names for marker in _FEATURES_LAST):
        return -1
    return 1


def _first_tensor(value):
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        for item in value:
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


class StateCaptureHook(CountingProbe):
    """A probe on one module: counts the states of its input or output in
    ``self.counter`` (a :class:`~tensorstate_callbacks.StateCounter`).

    ``name`` is ``<module name>_post_states`` after a module, ``_pre_states``
    before it (``conv_1_post_states``, ``block_0_fc_pre_states``).
    Capture can be paused with ``enabled = False`` (the Lightning callback
    captures during validation epochs only).

    >>> layer = torch.nn.Linear(3, 4)
    >>> probe = StateCaptureHook("fc_post_states", method="after")
    >>> probe.attach(layer)
    >>> _ = layer(torch.randn(10, 3))
    >>> probe.state_count, probe.max_entropy()
    (10, 4)
    >>> probe.remove()
    """

    def __init__(self, name: str, *, method: str = "after", neuron_axis: int | None = None,
                 output_selector: Callable | None = None, storage_path=None,
                 memory_limit: int | None = None):
        if method not in ("before", "after"):
            raise ValueError(f"a probe's method must be 'before' or 'after', got {method!r}")
        self.name = name
        self.counter = StateCounter(name, storage_path=storage_path, memory_limit=memory_limit)
        self.method = method
        self.neuron_axis = check_neuron_axis(neuron_axis)
        self.output_selector = output_selector
        self.enabled = True
        self.module: torch.nn.Module | None = None
        self._handle = None
        self._warned_no_tensor = False

    def attach(self, module: torch.nn.Module) -> None:
        """Register this probe as a forward (pre-)hook of ``module``."""
        if self._handle is not None:
            raise ValueError(f"{self.name} is already attached; remove() it first")
        self.module = module
        if self.method == "after":
            self._handle = module.register_forward_hook(self._after_hook)
        else:
            self._handle = module.register_forward_pre_hook(self._before_hook)

    def remove(self) -> None:
        """Remove this probe's hook (and only it) from its module."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    @property
    def attached(self) -> bool:
        """True while the hook is registered."""
        return self._handle is not None

    def _after_hook(self, module, inputs, output) -> None:
        if self.enabled:
            self._capture_now(module, output)

    def _before_hook(self, module, inputs) -> None:
        if self.enabled:
            self._capture_now(module, inputs)

    def _capture_now(self, module, value) -> None:
        # Under torch.compile the capture runs eagerly, outside the graph: the
        # compiler must not trace into the kernel call (it would hand over
        # symbolic tensors).  Eager calls skip the wrapper's cost.
        if torch.compiler.is_compiling():
            self._capture_eagerly(module, value)
        else:
            self.capture(module, value)

    @torch.compiler.disable
    def _capture_eagerly(self, module, value) -> None:
        self.capture(module, value)

    def capture(self, module: torch.nn.Module, value) -> None:
        """Count the states of ``value`` (a tensor, or a tuple/dict holding one).

        Only a detached tensor is read: nothing here enters autograd.  The
        counting runs on one thread: inside a forward pass the framework's own
        threads keep the cores busy, and handing work to a pool only adds
        waiting (reads of the counts, between passes, use every core)."""
        if self.output_selector:
            with torch.no_grad():
                tensor = self.output_selector(value)
        else:
            tensor = _first_tensor(value)
        if not isinstance(tensor, torch.Tensor):
            if not self._warned_no_tensor:
                self._warned_no_tensor = True
                warnings.warn(f"{self.name}: the probed value holds no tensor; nothing captured "
                              "(pass output_selector= to pick one)", stacklevel=2)
            return
        axis = self.neuron_axis if self.neuron_axis is not None else \
            default_neuron_axis(module, tensor)
        count_tensor(self.counter, tensor, axis, threads=1)


def find_modules(model: torch.nn.Module, attach_to: Sequence[str], exclude: Sequence[str] = ()):
    """``[(module_name, module)]`` whose class (or a base class) or name is in
    ``attach_to`` and whose name/class is not in ``exclude``.

    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU())
    >>> [name for name, _ in find_modules(net, ["Conv2d"])]
    ['0']
    """
    named = list(model.named_modules())
    sites = [Site(name, tuple(cls.__name__ for cls in type(module).__mro__))
             for name, module in named]
    return [named[index] for index in select(sites, attach_to, exclude, kind="module")]


def attach_probes(model: torch.nn.Module, attach_to=("Conv2d",), exclude=(),
                  method: str = "after", storage_path=None, *,
                  neuron_axis: int | None = None, output_selector: Callable | None = None,
                  memory_limit: int | None = None) -> list[StateCaptureHook]:
    """Hook new probes onto the modules of ``model`` that ``attach_to`` picks.

    Unlike :func:`build_efficiency_model` it leaves ``model.efficiency_layers``
    and every other probe alone: the caller owns the probes it gets (and
    ``remove()`` s them), so several sets of probes can share a model.

    Args:
        model: the module to probe.
        attach_to: module class names (subclasses match too) or module names.
        exclude: module names or classes to leave out.
        method: ``'after'`` (outputs), ``'before'`` (inputs) or ``'both'``.
        storage_path: if given, each probe also stores its raw states as zarr
            at ``storage_path/<probe name>``.
        neuron_axis: the neuron axis of every probe (default: see
            :func:`default_neuron_axis`).
        output_selector: picks the tensor to read from a module's output.
        memory_limit: bytes of count tables per probe before spilling to disk.

    Returns:
        The probes, in model order (for ``'both'``: before, then after).

    Raises:
        TypeError: ``model`` is not a ``torch.nn.Module``.
        ValueError: ``attach_to``/``exclude``/``method`` pick nothing or are malformed.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU())
        >>> probes = attach_probes(net, ["Linear", "ReLU"])
        >>> _ = net(torch.randn(10, 4))
        >>> [(p.name, p.state_count) for p in probes]
        [('0_post_states', 10), ('1_post_states', 10)]
        >>> for probe in probes: probe.remove()
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    methods = check_method(method)
    probes = []
    for module_name, module in find_modules(model, attach_to, exclude):
        for where in methods:
            name = torch_probe_name(module_name, where)
            probe = StateCaptureHook(
                name, method=where, neuron_axis=neuron_axis, output_selector=output_selector,
                storage_path=None if storage_path is None else Path(storage_path) / name,
                memory_limit=memory_limit,
            )
            probe.attach(module)
            probes.append(probe)
    return probes


def build_efficiency_model(model: torch.nn.Module, attach_to=("Conv2d",), exclude=(),
                           method: str = "after", storage_path=None, **options
                           ) -> torch.nn.Module:
    """Hook state probes onto the modules of ``model`` named by ``attach_to``,
    as TensorState does.

    Probes from an earlier call are removed first.  Arguments and errors are
    those of :func:`attach_probes` (``options``: ``neuron_axis``,
    ``output_selector``, ``memory_limit``).

    Returns:
        ``model`` itself, with its probes in ``model.efficiency_layers``.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
        ...                           torch.nn.Linear(8, 2))
        >>> net = build_efficiency_model(net, attach_to=["Linear"], method="after")
        >>> _ = net(torch.randn(100, 4))
        >>> [(p.name, p.state_count) for p in net.efficiency_layers]
        [('0_post_states', 100), ('2_post_states', 100)]
        >>> remove_efficiency_probes(net)
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    find_modules(model, attach_to, exclude)  # a bad choice raises before old probes go
    check_method(method)
    remove_efficiency_probes(model)
    model.efficiency_layers = attach_probes(model, attach_to, exclude, method, storage_path,
                                            **options)
    return model


def reset_efficiency_model(model: torch.nn.Module) -> None:
    """Reset every probe of ``model`` (``state_count`` back to 0).

    >>> net = build_efficiency_model(torch.nn.Sequential(torch.nn.Linear(2, 3)), ["Linear"])
    >>> _ = net(torch.ones(4, 2)); reset_efficiency_model(net)
    >>> net.efficiency_layers[0].state_count
    0
    """
    for probe in getattr(model, "efficiency_layers", ()):
        probe.reset_states()


def remove_efficiency_probes(model: torch.nn.Module) -> None:
    """Remove every probe this package attached to ``model``; other hooks stay.

    >>> net = build_efficiency_model(torch.nn.Sequential(torch.nn.Linear(2, 3)), ["Linear"])
    >>> remove_efficiency_probes(net)
    >>> len(net[0]._forward_hooks), hasattr(net, "efficiency_layers")
    (0, False)
    """
    for probe in getattr(model, "efficiency_layers", ()):
        probe.remove()
    if "efficiency_layers" in model.__dict__:
        del model.efficiency_layers
