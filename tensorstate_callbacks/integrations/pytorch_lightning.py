"""The ``StateSpaceCallback`` for Trainers of the ``pytorch_lightning`` package.

``lightning`` and ``pytorch_lightning`` ship the same Trainer under two
package names, and each Trainer accepts only callbacks of its own package.
This class is :class:`tensorstate_callbacks.lightning.StateSpaceCallback`
(same arguments, tags, history and TensorBoard extras) that is also a
``pytorch_lightning.Callback``:

>>> import pytorch_lightning as pl
>>> from tensorstate_callbacks.pytorch_lightning import StateSpaceCallback
>>> isinstance(StateSpaceCallback(attach_to=["Conv2d"]), pl.Callback)
True
"""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.loggers import TensorBoardLogger

from .lightning import StateSpaceCallback as _LightningStateSpaceCallback

__all__ = ["StateSpaceCallback"]


class StateSpaceCallback(_LightningStateSpaceCallback, pl.Callback):
    __doc__ = _LightningStateSpaceCallback.__doc__
    _tensorboard_logger = TensorBoardLogger
