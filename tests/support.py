"""Small utilities several test files share (no NumPy references: see reference.py)."""

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

# The smallest demo that still trains: 2 epochs on 300 images, 200 for validation.
TINY_DEMO = ["--epochs", "2", "--limit", "300", "--valid-limit", "200", "--batch-size", "100"]


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# The start of a script for run_on_keras_backend: a one-convolution Keras model
# (``model``, its ``inputs`` and ``hidden`` convolution output), compiled, and
# 40 samples ``x`` with one-hot labels ``y`` of 3 classes.
KERAS_SMALL_CONV_NET = textwrap.dedent("""
    import numpy as np, keras
    from tensorstate_callbacks.keras import StateSpaceCallback
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 1))
    hidden = keras.layers.Conv2D(5, 3, activation="relu", name="conv")(inputs)
    out = keras.layers.Dense(3, activation="softmax", name="fc")(keras.layers.Flatten()(hidden))
    model = keras.Model(inputs, out)
    model.compile(loss="categorical_crossentropy", optimizer="sgd", metrics=["accuracy"])
    x = rng.normal(size=(40, 6, 6, 1)).astype("float32")
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, 40)]
""")


def run_on_keras_backend(script: str, backend: str) -> None:
    """Run ``script`` in a fresh interpreter under ``KERAS_BACKEND=backend`` (from
    the tests directory) and check it printed ``backend ok <backend>``."""
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=300, cwd=Path(__file__).parent)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"backend ok {backend}" in result.stdout
