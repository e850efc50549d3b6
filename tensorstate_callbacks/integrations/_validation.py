"""Checks of the arguments every integration takes, with one wording each.

The same mistake raises the same exception, with the same message, from the
PyTorch probes, the Keras probes and both callbacks.  An argument of the wrong
type raises :class:`ArgumentTypeError`, a ``TypeError`` that is also a
``ValueError`` (version 0.1 raised either, depending on the integration).
"""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Integral, Real
from pathlib import Path

__all__ = ["ArgumentTypeError", "check_accuracy_key", "check_beta", "check_estimator",
           "check_log_dir",
           "check_neuron_axis", "check_positive_int", "names"]


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type (a TypeError, and a ValueError as in 0.1)."""


def names(value, argument: str, what: str = "class or module names") -> list[str]:
    """``value`` (one name or a sequence of names) as a list of names.

    Example:
        >>> names("Conv2d", "attach_to"), names(("fc", "conv"), "exclude")
        (['Conv2d'], ['fc', 'conv'])
        >>> names([2], "attach_to")
        Traceback (most recent call last):
        ...
        tensorstate_callbacks.integrations._validation.ArgumentTypeError: attach_to must be a list of class or module names, got [2]
    """  # noqa: E501
    if isinstance(value, str):
        return [value]
    try:
        listed = list(value)
    except TypeError:
        listed = None
    if listed is None or not all(isinstance(name, str) for name in listed):
        raise ArgumentTypeError(f"{argument} must be a list of {what}, got {value!r}")
    return listed


def check_beta(beta) -> float:
    """The aIQ weight of accuracy: a number > 0.

    Example:
        >>> check_beta(2)
        2.0
    """
    if isinstance(beta, bool) or not isinstance(beta, Real) or not beta > 0:
        raise ValueError(f"beta must be a number > 0, got {beta!r}")
    return float(beta)


def check_accuracy_key(key) -> str | None:
    """A metrics key (str) or None.

    Example:
        >>> check_accuracy_key("val_acc")
        'val_acc'
    """
    if key is not None and not isinstance(key, str):
        raise ArgumentTypeError(f"accuracy_key must be a metrics key (str) or None, got {key!r}")
    return key


def check_positive_int(value, argument: str, allow_none: bool = True) -> int | None:
    """A positive int (or None where allowed).

    Example:
        >>> check_positive_int(32, "batch_size"), check_positive_int(None, "batch_size")
        (32, None)
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, Integral) or value <= 0:
        none = " or None" if allow_none else ""
        raise ValueError(f"{argument} must be a positive int{none}, got {value!r}")
    return int(value)


def check_neuron_axis(axis, allow_none: bool = True, allow_mapping: bool = False):
    """An axis index (int), None for the automatic rule where allowed, or (where
    allowed) a mapping from name patterns to axis indices.

    Example:
        >>> check_neuron_axis(-1), check_neuron_axis(None), check_neuron_axis({"fc*": -1}, True, True)
        (-1, None, {'fc*': -1})
    """  # noqa: E501
    if axis is None and allow_none:
        return None
    if allow_mapping and isinstance(axis, Mapping):
        if all(isinstance(key, str) and isinstance(value, Integral)
               and not isinstance(value, bool) for key, value in axis.items()):
            return dict(axis)
    elif not isinstance(axis, bool) and isinstance(axis, Integral):
        return int(axis)
    also = ", or a mapping of probe/module/class name patterns to ints" if allow_mapping else ""
    raise ArgumentTypeError(f"neuron_axis must be an int{also}, got {axis!r}")


def check_log_dir(log_dir) -> Path:
    """A log directory given as a str or a Path.

    Example:
        >>> check_log_dir("logs").name
        'logs'
    """
    if not isinstance(log_dir, (str, Path)):
        raise ArgumentTypeError(f"log_dir must be a str or Path, got {type(log_dir).__name__}")
    return Path(log_dir)


def check_estimator(estimator) -> str:
    """An entropy estimator's name (see ``tensorstate_callbacks.core.metrics.ESTIMATORS``).

    Example:
        >>> check_estimator("chao_shen")
        'chao_shen'
    """
    from ..core.metrics import ESTIMATORS

    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {list(ESTIMATORS)}, got {estimator!r}")
    return estimator
