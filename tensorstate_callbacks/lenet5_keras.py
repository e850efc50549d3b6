"""The Keras LeNet-5 demo model: this path is kept for users; the code lives in
:mod:`tensorstate_callbacks.cli.demos.lenet5_keras`."""

from .cli.demos.lenet5_keras import *  # noqa: F403
from .cli.demos.lenet5_keras import __all__  # noqa: F401
