"""Route model-level calls to the PyTorch or Keras integration, importing
neither framework unless the user's object comes from it.

The package root exports these functions (``ts.build_efficiency_model``,
``ts.reset_efficiency_model``, ``ts.network_efficiency``), so that the
TensorState API takes a model of either framework.  A model's framework is
looked up in ``sys.modules``: a model of a framework that was never imported
cannot exist, so nothing is imported to find out.

Example:
    >>> import tensorstate_callbacks as ts
    >>> ts.network_efficiency([0.25, 1.0])         # numbers need no framework
    0.5
    >>> ts.build_efficiency_model is build_efficiency_model
    True
"""

from __future__ import annotations

import sys

from ..core import metrics

__all__ = ["build_efficiency_model", "efficiency_layers_of", "integration_for",
           "network_efficiency", "reset_efficiency_model"]


def _is_torch_module(obj) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def _is_keras_model(obj) -> bool:
    keras = sys.modules.get("keras")
    return keras is not None and isinstance(obj, keras.Model)


def integration_for(model):
    """The integration module (``.torch`` or ``.keras``) that handles ``model``.

    A Keras model is checked first: under ``KERAS_BACKEND=torch`` it is also a
    ``torch.nn.Module``.

    Args:
        model: a ``torch.nn.Module`` or a ``keras.Model``.

    Returns:
        :mod:`tensorstate_callbacks.integrations.torch` or
        :mod:`tensorstate_callbacks.integrations.keras`.

    Raises:
        TypeError: ``model`` is neither.

    Example:
        >>> integration_for([1, 2])
        Traceback (most recent call last):
        ...
        TypeError: expected a torch.nn.Module or a keras.Model, got list
    """
    if _is_keras_model(model):  # first: under KERAS_BACKEND=torch a model is both
        from . import keras as integration
    elif _is_torch_module(model):
        from . import torch as integration
    else:
        raise TypeError(
            f"expected a torch.nn.Module or a keras.Model, got {type(model).__name__}"
        )
    return integration


def efficiency_layers_of(obj):
    """The probes of a model made by ``build_efficiency_model``, else None.

    Args:
        obj: a model, or anything else (a list of efficiencies).

    Returns:
        The model's probes (``efficiency_layers``), or None when ``obj`` is not
        a model.

    Raises:
        ValueError: ``obj`` is a model without probes.

    Example:
        >>> efficiency_layers_of([0.5, 0.25]) is None     # a list of efficiencies
        True
    """
    if _is_torch_module(obj) or _is_keras_model(obj):
        layers = getattr(obj, "efficiency_layers", None)
        if not layers:
            raise ValueError(
                "this model has no state probes: prepare it with "
                "build_efficiency_model(model, attach_to=[...]) first"
            )
        return list(layers)
    return None


def build_efficiency_model(model, attach_to, exclude=(), method="after", storage_path=None,
                           **options):
    """Attach state probes to a PyTorch module or a Keras model.

    See :func:`tensorstate_callbacks.integrations.torch.build_efficiency_model`
    and :func:`tensorstate_callbacks.integrations.keras.probes.build_efficiency_model`
    for what each does: PyTorch probes are forward hooks on ``model`` itself,
    Keras probes are layers of a new model that shares ``model``'s layers.

    Args:
        model: a ``torch.nn.Module`` or a ``keras.Model``.
        attach_to: class names (subclasses match too) or names of the modules
            or layers to probe.
        exclude: names or class names to leave out.
        method: ``'after'`` (outputs), ``'before'`` (inputs) or ``'both'``.
        storage_path: a directory; each probe keeps its raw states there (zarr).
        **options: passed on (``neuron_axis``, ``memory_limit``; PyTorch also
            ``output_selector``).

    Returns:
        The probed model (PyTorch: ``model`` itself; Keras: a new model), with
        its probes in ``efficiency_layers``.

    Raises:
        TypeError: ``model`` is neither a ``torch.nn.Module`` nor a ``keras.Model``.
        ValueError: ``attach_to``/``exclude``/``method`` pick nothing or are malformed.

    Example:
        Neither framework is needed to import this package, so this example
        checks the error path (the tutorials probe real models):

        >>> build_efficiency_model(object(), attach_to=["Conv2d"])
        Traceback (most recent call last):
        ...
        TypeError: expected a torch.nn.Module or a keras.Model, got object
    """
    return integration_for(model).build_efficiency_model(
        model, attach_to=attach_to, exclude=exclude, method=method,
        storage_path=storage_path, **options,
    )


def reset_efficiency_model(model) -> None:
    """Reset every probe of ``model`` (``state_count`` back to 0).

    Args:
        model: a model prepared by :func:`build_efficiency_model`.

    Raises:
        TypeError: ``model`` is neither a ``torch.nn.Module`` nor a ``keras.Model``.

    Example:
        >>> reset_efficiency_model(object())
        Traceback (most recent call last):
        ...
        TypeError: expected a torch.nn.Module or a keras.Model, got object
    """
    integration_for(model).reset_efficiency_model(model)


def network_efficiency(efficiencies) -> float:
    """Geometric mean of layer efficiencies.

    Args:
        efficiencies: floats, or a model prepared by ``build_efficiency_model``
            (PyTorch or Keras), whose probes' efficiencies are used.

    Returns:
        The geometric mean; 0.0 when one efficiency is 0.

    Raises:
        ValueError: no efficiency, one not finite or negative, or a model without probes.

    Example:
        >>> network_efficiency([0.25, 1.0])
        0.5
    """
    layers = efficiency_layers_of(efficiencies)
    if layers is not None:
        efficiencies = [layer.efficiency() for layer in layers]
    return metrics.network_efficiency(efficiencies)
