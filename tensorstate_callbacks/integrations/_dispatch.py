"""Route model-level calls to the PyTorch or Keras integration, importing
neither framework unless the user's object comes from it."""

from __future__ import annotations

import sys

from ..core import metrics

__all__ = ["build_efficiency_model", "integration_for", "network_efficiency",
           "reset_efficiency_model"]


def _is_torch_module(obj) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def _is_keras_model(obj) -> bool:
    keras = sys.modules.get("keras")
    return keras is not None and isinstance(obj, keras.Model)


def integration_for(model):
    """The integration module (``.torch`` or ``.keras``) that handles ``model``.

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

    See :func:`tensorstate_callbacks.torch.build_efficiency_model` and
    :func:`tensorstate_callbacks.keras.build_efficiency_model`.  Neither framework
    is needed to import this package, so the example checks the error path:

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
