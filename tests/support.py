"""Small utilities several test files share (no NumPy references: see reference.py)."""

import socket

# The smallest demo that still trains: 2 epochs on 300 images, 200 for validation.
TINY_DEMO = ["--epochs", "2", "--limit", "300", "--valid-limit", "200", "--batch-size", "100"]


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
