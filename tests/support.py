"""Small utilities several test files share (no NumPy references: see reference.py)."""

import os
import socket
import subprocess
import sys
from pathlib import Path

# The smallest demo that still trains: 2 epochs on 300 images, 200 for validation.
TINY_DEMO = ["--epochs", "2", "--limit", "300", "--valid-limit", "200", "--batch-size", "100"]


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_on_keras_backend(script: str, backend: str) -> None:
    """Run ``script`` in a fresh interpreter under ``KERAS_BACKEND=backend`` (from
    the tests directory) and check it printed ``backend ok <backend>``."""
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=300, cwd=Path(__file__).parent)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"backend ok {backend}" in result.stdout
