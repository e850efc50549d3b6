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
from pathlib import Path

import torch

from ..core.counter import IncompleteCountsError, StateCounter
from ._probe import CountingProbe
from ._selection import METHODS, Site, check_method, for_probe, select, torch_probe_name
from ._torch_axis import LayoutTracker, first_tensor, layout_kind, neuron_axis_from_context
from ._validation import check_neuron_axis
from .devices import count_tensor, pack_with_torch

__all__ = ["METHODS", "ProbeList", "StateCaptureHook", "attach_probes", "build_efficiency_model",
           "default_neuron_axis", "find_modules", "pack_with_torch", "remove_efficiency_probes",
           "reset_efficiency_model"]


def default_neuron_axis(module: torch.nn.Module, tensor: torch.Tensor) -> int:
    """The neuron axis of ``tensor`` seen at ``module`` by the module's class alone.

    Last dim for tensors of at most 2 dims and for modules that keep features
    last (linear, attention, norms over the last dim, recurrent layers); dim 1
    for convolution-like modules and any other tensor of 3 or more dims.  In a
    model, a probe on a module that does not fix its layout (an activation, a
    block) follows the module that ran before it instead (see
    :mod:`._torch_axis`).

    Example:
        >>> default_neuron_axis(torch.nn.Conv2d(1, 4, 3), torch.zeros(2, 4, 5, 5))
        1
        >>> default_neuron_axis(torch.nn.Linear(3, 4), torch.zeros(2, 7, 4))
        -1
    """
    return neuron_axis_from_context(type(module), tensor, None)


def _unreadable(tensor: torch.Tensor) -> str | None:
    """Why a probe cannot read ``tensor``'s states, or None when it can."""
    if tensor.dim() == 0:
        return "a 0-d tensor has no neuron axis"
    if tensor.layout != torch.strided and not tensor.is_nested:
        return f"{tensor.layout} tensors are not read (pass output_selector= to densify one)"
    if tensor.is_complex():
        return f"{tensor.dtype} values have no sign to fire on"
    return None


class StateCaptureHook(CountingProbe):
    """A probe on one call site of a module: counts the states of its input or
    output in ``self.counter`` (a :class:`~tensorstate_callbacks.StateCounter`).

    ``name`` is ``<module name>_post_states`` after a module, ``_pre_states``
    before it (``conv_1_post_states``, ``block_0_fc_pre_states``); the k-th
    call (k >= 1) of a module in one forward pass has its own probe,
    ``<module name>_call<k>_post_states``.  Capture can be paused with
    ``enabled = False`` (the Lightning callback captures during validation
    epochs only).

    Args:
        name: the probe's name.
        method: ``'after'`` (the module's output) or ``'before'`` (its input).
        neuron_axis: the neuron axis (None: decided at the first batch, see
            :mod:`._torch_axis`).
        output_selector: ``f(value)`` picks what to read from the module's
            output (or input tuple): a tensor, or ``(tensor, mask)`` where
            ``mask`` is a bool tensor over the tensor's state axes (its shape
            without the neuron axis) and only states where it is True count,
            e.g. the tokens of a padded batch.
        storage_path: keep the raw packed states as zarr there.
        memory_limit: bytes of count tables before spilling to disk.

    Example:
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
        self.layout_context: Callable[[], tuple[str, int] | None] = lambda: None
        self.labels_context: Callable[[], object] = lambda: None  # this batch's labels
        self._use_labels: bool | None = None  # decided at the first batch
        self._axis: int | None = None  # the axis taken at the first batch
        self._width: int | None = None  # its neurons
        self._detach: Callable[[], None] | None = None
        self._warned: set[str] = set()

    def attach(self, module: torch.nn.Module) -> None:
        """Register this probe alone as a forward (pre-)hook of ``module``
        (every call of the module feeds it)."""
        if self._detach is not None:
            raise ValueError(f"{self.name} is already attached; remove() it first")
        self.module = module
        if self.method == "after":
            handle = module.register_forward_hook(
                lambda module, inputs, output: self.capture_call(module, output))
        else:
            handle = module.register_forward_pre_hook(
                lambda module, inputs: self.capture_call(module, inputs))
        self._detach = handle.remove

    def remove(self) -> None:
        """Stop this probe (its hook goes once no probe needs it); other hooks stay."""
        if self._detach is not None:
            self._detach()
            self._detach = None

    @property
    def attached(self) -> bool:
        """True while the probe is hooked to its module."""
        return self._detach is not None

    @property
    def needs_layout_context(self) -> bool:
        """True while the probe has yet to take its neuron axis from the module
        that runs before it (see :mod:`._torch_axis`)."""
        return (self.neuron_axis is None and self._width is None
                and self.module is not None and layout_kind(type(self.module)) is None)

    def capture_call(self, module: torch.nn.Module, value) -> None:
        """A hook's entry: count ``value`` when enabled.  Under torch.compile
        the capture runs eagerly, outside the graph: the compiler must not
        trace into the kernel call (it would hand over symbolic tensors)."""
        if not self.enabled:
            return
        try:
            if torch.compiler.is_compiling():
                self._capture_eagerly(module, value)
            else:
                self.capture(module, value)
        except (IncompleteCountsError, MemoryError) as error:
            # The counter is marked incomplete (its reads raise); the forward pass goes on.
            self._warn_once("incomplete", f"{error}; the forward pass goes on, and this "
                                          "probe's metrics are left out until its counts are "
                                          "reset")

    @torch.compiler.disable
    def _capture_eagerly(self, module, value) -> None:
        self.capture(module, value)

    def capture(self, module: torch.nn.Module, value) -> None:
        """Count the states of ``value`` (a tensor, or a tuple/dict holding one).

        Only a detached tensor is read: nothing here enters autograd.  The
        counting runs on one thread: inside a forward pass the framework's own
        threads keep the cores busy (reads of the counts, between passes, use
        every core).  A value that holds no readable tensor is skipped with
        one warning.

        Raises:
            ValueError: the neuron axis changed size since the first batch."""
        tensor, mask = self._select(value)
        if tensor is None:
            return
        axis = self._axis_for(module, tensor)
        if mask is not None:
            tensor, axis = tensor.movedim(axis, -1)[mask], -1
        labels = self._labels_for(tensor, axis, mask)
        count_tensor(self.counter, tensor, axis, threads=1, labels=labels)

    def _labels_for(self, tensor: torch.Tensor, axis: int, mask) -> object:
        """This batch's labels when they label this tensor's samples (axis 0, not
        the neurons; one per sample), decided at the first batch with labels."""
        labels = self.labels_context()
        if labels is None or self._use_labels is False:
            return None
        if self._use_labels is None:
            samples = tensor.size(0)
            fits = mask is None and axis not in (0, -tensor.dim()) and len(labels) == samples
            if not fits:
                self._warn_once("labels", f"labels are not used: this tensor's axis 0 "
                                          f"({samples}) is not the batch's {len(labels)} samples")
            self._use_labels = fits
        return labels if self._use_labels else None

    def _select(self, value):
        """``(tensor, mask or None)`` to read from ``value``, or ``(None, None)``."""
        mask = None
        if self.output_selector:
            with torch.no_grad():
                tensor = self.output_selector(value)
            if isinstance(tensor, tuple) and len(tensor) == 2:
                tensor, mask = tensor
        else:
            tensor = first_tensor(value)
        if not isinstance(tensor, torch.Tensor):
            self._warn_once("no tensor", "the probed value holds no tensor; nothing captured "
                                         "(pass output_selector= to pick one)")
            return None, None
        reason = _unreadable(tensor)
        if reason is not None:
            self._warn_once(reason, f"skipped: {reason}")
            return None, None
        if tensor.is_floating_point() and tensor.element_size() == 1:  # float8: exact in float32
            tensor = tensor.detach().float()
        return tensor, mask

    def _axis_for(self, module, tensor: torch.Tensor) -> int:
        """The neuron axis of ``tensor``: fixed, or taken at the first batch and
        then checked: a neuron axis never changes size."""
        axis = self.neuron_axis
        if axis is None:
            axis = -1 if tensor.is_nested else None
        if axis is None and self._width is None:
            axis = neuron_axis_from_context(type(module), tensor, self.layout_context())
            self._axis = axis
        elif axis is None:
            axis = self._axis
        width = tensor.size(-1) if tensor.is_nested else tensor.shape[axis]
        if self._width is None:
            self._width = width
        elif width != self._width:
            raise ValueError(
                f"{self.name}: its neuron axis (axis {axis} of a tensor of shape "
                f"{tuple(tensor.shape)}) had {self._width} neurons and now has {width}: an axis "
                "that changes size between batches is a batch or sequence axis, not the "
                "neurons. Pass neuron_axis={" + repr(self.name) + ": <axis>} (a probe name, "
                "module name or class name pattern) to choose the axis"
            )
        return axis

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(f"{self.name}: {message}", stacklevel=4)


class _CallSites:
    """The hook on one module at one position: the k-th call of the module in
    a forward pass feeds the k-th probe, made when that call first runs."""

    def __init__(self, probes: ProbeList, module: torch.nn.Module, where: str, make_probe):
        self.probes = probes
        self.make_probe = make_probe  # k -> StateCaptureHook
        self.sites: list[StateCaptureHook | None] = []
        self.calls = 0
        self._module, self._where = module, where
        self._handle = None
        self.hook()

    def hook(self) -> None:
        """Put the hook on the module, unless it is there or every probe is gone.

        The hook goes first in line, wherever other hooks are and whenever
        they came: a probe reads the module's input as the module was called
        and its output as its ``forward`` returned it, before another hook
        could replace them."""
        if self._handle is not None or (self.sites and not any(self.sites)):
            return
        if self._where == "after":
            self._handle = self._module.register_forward_hook(
                lambda module, inputs, output: self.called(module, output), prepend=True)
        else:
            self._handle = self._module.register_forward_pre_hook(
                lambda module, inputs: self.called(module, inputs), prepend=True)

    def unhook(self) -> None:
        """Take the hook off the module (the probes stay, with their counts)."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def add_site(self) -> StateCaptureHook:
        probe = self.make_probe(len(self.sites))
        probe.enabled = self.probes.enabled
        probe.layout_context = self.probes.layout_context
        probe.labels_context = lambda: self.probes.labels
        probe._detach = lambda: self.drop(probe)
        self.sites.append(probe)
        self.probes.append(probe)
        return probe

    def called(self, module, value) -> None:
        call, self.calls = self.calls, self.calls + 1
        if call == len(self.sites):
            if not self.probes.enabled:
                return
            self.add_site()
        probe = self.sites[call] if call < len(self.sites) else None
        if probe is not None:
            probe.capture_call(module, value)

    def drop(self, probe: StateCaptureHook) -> None:
        self.sites[self.sites.index(probe)] = None
        if not any(self.sites):
            self.unhook()


class ProbeList(list):
    """The probes of one :func:`attach_probes` call, in model order.

    It grows when a module runs more than once in a forward pass (one probe per
    call site).  ``enabled`` pauses or resumes them all: paused, they take
    their hooks off the model, which then runs exactly as without them
    (PyTorch skips its fast paths, such as the fused inference of
    ``TransformerEncoderLayer``, on modules that carry hooks).  :meth:`new_pass`
    starts counting call sites again (called by a hook before each forward
    pass of the model, and by the Lightning callback before each batch).
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self._model = model
        self._enabled = True
        self._attached = True
        self.labels = None  # one integer per sample of the current batch (set by a callback)
        self._call_sites: list[_CallSites] = []
        self._tracker: LayoutTracker | None = None
        self._pass_hook = None
        self._sync_hooks()

    @property
    def enabled(self) -> bool:
        """Whether the probes capture (and are hooked to the model)."""
        return self._enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self._enabled = bool(value)
        for probe in self:
            probe.enabled = self._enabled
        self._sync_hooks()

    def _sync_hooks(self) -> None:
        """Hooks on the model while the probes capture, none while paused or detached.

        The pass hook is put on last and first in line among the model's
        pre-hooks: a pass starts before any probe sees it, a probe on the
        model's own input too."""
        hooked = self._enabled and self._attached
        for sites in self._call_sites:
            if hooked:
                sites.hook()
            else:
                sites.unhook()
        if self._pass_hook is not None:
            self._pass_hook.remove()
            self._pass_hook = None
        if hooked:
            self._pass_hook = self._model.register_forward_pre_hook(
                lambda module, inputs: self.new_pass(), prepend=True)
        self._sync_tracker()

    def layout_context(self) -> tuple[str, int] | None:
        """What the last layout-defining module that ran produced (see :mod:`._torch_axis`)."""
        return None if self._tracker is None else self._tracker.last

    def new_pass(self) -> None:
        """A new forward pass starts: the next call of each module is its first."""
        for sites in self._call_sites:
            sites.calls = 0
        if self._tracker is not None:
            self._tracker.last = None
        self._sync_tracker()

    def _sync_tracker(self) -> None:
        """Watch layouts only while a probe still has to take its neuron axis
        from them, and only while capturing."""
        needed = self._enabled and self._attached \
            and any(probe.needs_layout_context for probe in self)
        if needed and self._tracker is None:
            self._tracker = LayoutTracker(self._model)
        elif not needed and self._tracker is not None:
            self._tracker.remove()
            self._tracker = None

    def detach(self) -> None:
        """Remove every hook of these probes (the model is as before)."""
        for probe in self:
            probe.remove()
        self._attached = False
        self._sync_hooks()


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
                  neuron_axis=None, output_selector: Callable | None = None,
                  memory_limit: int | None = None) -> ProbeList:
    """Hook new probes onto the modules of ``model`` that ``attach_to`` picks.

    Unlike :func:`build_efficiency_model` it leaves ``model.efficiency_layers``
    and every other probe alone: the caller owns the probes it gets (and
    ``detach()`` es them), so several sets of probes can share a model.

    Args:
        model: the module to probe.
        attach_to: module class names (subclasses match too) or module names.
        exclude: module names or classes to leave out.
        method: ``'after'`` (outputs), ``'before'`` (inputs) or ``'both'``.
        storage_path: if given, each probe also stores its raw states as zarr
            at ``storage_path/<probe name>``.
        neuron_axis: the neuron axis of every probe (an int), or a mapping from
            probe names, module names or class names (``fnmatch`` patterns) to
            axes; probes it does not name take theirs automatically (see
            :mod:`._torch_axis`).
        output_selector: picks the tensor (or ``(tensor, mask)``) to read from a
            module's output; a callable, or a mapping like ``neuron_axis``.
        memory_limit: bytes of count tables per probe before spilling to disk.

    Returns:
        A :class:`ProbeList` of the probes in model order (for ``'both'``:
        before, then after); it grows by one probe for each further call site
        of a probed module.

    Raises:
        TypeError: ``model`` is not a ``torch.nn.Module``, or ``neuron_axis``
            is neither an int nor a mapping.
        ValueError: ``attach_to``/``exclude``/``method`` pick nothing or are malformed.

    Example:
        >>> act = torch.nn.ReLU()
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), act, torch.nn.Linear(8, 16), act)
        >>> probes = attach_probes(net, ["ReLU"])
        >>> _ = net(torch.randn(10, 4))
        >>> [(p.name, p.num_neurons) for p in probes]
        [('1_post_states', 8), ('1_call1_post_states', 16)]
        >>> probes.detach()
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    neuron_axis = check_neuron_axis(neuron_axis, allow_mapping=True)
    methods = check_method(method)
    chosen = find_modules(model, attach_to, exclude)
    probes = ProbeList(model)
    for module_name, module in chosen:
        classes = [cls.__name__ for cls in type(module).__mro__]
        for where in methods:
            def make_probe(call, module=module, module_name=module_name, where=where,
                           classes=classes):
                name = torch_probe_name(module_name, where, call)
                keys = (name, module_name, *classes)
                probe = StateCaptureHook(
                    name, method=where, neuron_axis=for_probe(neuron_axis, *keys),
                    output_selector=for_probe(output_selector, *keys),
                    storage_path=None if storage_path is None else Path(storage_path) / name,
                    memory_limit=memory_limit,
                )
                probe.module = module
                return probe

            sites = _CallSites(probes, module, where, make_probe)
            probes._call_sites.append(sites)
            sites.add_site()
    probes._sync_hooks()
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
    probes = getattr(model, "efficiency_layers", ())
    if isinstance(probes, ProbeList):
        probes.detach()
    for probe in probes:
        probe.remove()
    if "efficiency_layers" in model.__dict__:
        del model.efficiency_layers
