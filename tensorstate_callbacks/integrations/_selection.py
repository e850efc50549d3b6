"""Which layers get probes, and what the probes are called (both frameworks).

A model is seen as a list of :class:`Site` (a module or layer: its name and
the names of its class and base classes).  ``attach_to`` picks sites by class
name (subclasses match too) or by name; ``exclude`` drops sites by either.
Probe names follow one convention (see docs/architecture.md):

* PyTorch: ``<module name>_post_states`` after a module, ``_pre_states``
  before it; dots of nested names become underscores; the root is ``model``.
* Keras: ``<layer name>_states`` after a layer, ``_pre_states`` before it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from ._validation import names

__all__ = ["METHODS", "Site", "check_method", "for_probe", "keras_probe_name", "select",
           "torch_probe_name"]

METHODS = ("before", "after", "both")


@dataclass(frozen=True)
class Site:
    """A place a probe can go: a module or layer's name and its class names (MRO)."""

    name: str
    classes: tuple[str, ...]


def check_method(method) -> tuple[str, ...]:
    """The probe positions ``method`` stands for: ``('after',)``, ``('before',)``
    or both; a ValueError for anything else.

    Example:
        >>> check_method("both")
        ('before', 'after')
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    return ("before", "after") if method == "both" else (method,)


def select(sites: Sequence[Site], attach_to, exclude=(), *, kind: str = "module",
           owner: str = "this model") -> list[int]:
    """Indices of the ``sites`` that ``attach_to`` picks and ``exclude`` keeps.

    Args:
        sites: every candidate of the model, in model order.
        attach_to: class names (a base class matches its subclasses) or names.
        exclude: class names or names to leave out.
        kind: ``"module"`` or ``"layer"``, for the messages.
        owner: how messages name the model.

    Raises:
        ValueError: ``attach_to`` is empty, one of its entries matches nothing
            (the message lists what the model holds), or every match is excluded.

    Example:
        >>> sites = [Site("conv", ("Conv2d", "Module")), Site("fc", ("Linear", "Module"))]
        >>> select(sites, ["Conv2d", "fc"]), select(sites, ["Module"], exclude=["fc"])
        ([0, 1], [0])
    """
    attach_to = names(attach_to, "attach_to", f"{kind} class names or {kind} names")
    excluded = set(names(exclude, "exclude", f"{kind} class names or {kind} names"))
    if not attach_to:
        raise ValueError(f"attach_to is empty: name at least one {kind} class or {kind} name")
    found, used = [], set()
    for index, site in enumerate(sites):
        hits = [key for key in attach_to if key == site.name or key in site.classes]
        used.update(hits)
        if hits and site.name not in excluded and not excluded.intersection(site.classes):
            found.append(index)
    unknown = [key for key in attach_to if key not in used]
    if unknown:
        classes = sorted({site.classes[0] for site in sites})
        raise ValueError(
            f"attach_to entries {unknown} match no {kind} of {owner}; it contains the "
            f"classes {classes} and the {kind}s {[site.name for site in sites if site.name]}"
        )
    if not found:
        raise ValueError(f"every {kind} matching attach_to={attach_to} is excluded by "
                         f"{sorted(excluded)}")
    return found


def _call_site(call: int) -> str:
    return f"_call{call}" if call else ""


def torch_probe_name(module_name: str, where: str, call: int = 0) -> str:
    """The name of a probe on the ``call``-th call site of a PyTorch module.

    Example:
        >>> torch_probe_name("block.0.conv", "after"), torch_probe_name("", "before")
        ('block_0_conv_post_states', 'model_pre_states')
        >>> torch_probe_name("act", "after", call=1)
        'act_call1_post_states'
    """
    suffix = "post" if where == "after" else "pre"
    base = module_name.replace(".", "_").replace("/", "_") or "model"
    return f"{base}{_call_site(call)}_{suffix}_states"


def keras_probe_name(layer_name: str, where: str, call: int = 0) -> str:
    """The name of a probe on the ``call``-th call site of a Keras layer.

    Example:
        >>> keras_probe_name("conv_1", "after"), keras_probe_name("conv_1", "before")
        ('conv_1_states', 'conv_1_pre_states')
        >>> keras_probe_name("shared", "after", call=1)
        'shared_call1_states'
    """
    base = layer_name.replace("/", "_")
    return f"{base}{_call_site(call)}" + ("_states" if where == "after" else "_pre_states")


def for_probe(option, *keys: str):
    """The value a per-probe ``option`` gives a probe known by ``keys`` (its
    probe name, module or layer name, class names): ``option`` itself unless it
    is a mapping from ``fnmatch`` patterns to values, where the first pattern
    that matches a key wins (None when none does).

    Example:
        >>> for_probe({"encoder.*": -1, "Conv*": 1}, "x_post_states", "encoder.act", "GELU")
        -1
        >>> for_probe(2, "any"), for_probe({"fc": 0}, "conv")
        (2, None)
    """
    if not isinstance(option, Mapping):
        return option
    for pattern, value in option.items():
        if any(fnmatchcase(key, pattern) for key in keys):
            return value
    return None
