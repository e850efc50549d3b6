"""Screenshot the TensorBoard dashboard of a run, for the docs and the README.

    python docs/screenshot.py --logdir runs --out docs/img/dashboard.png [--page custom_scalars]

Starts ``tensorboard`` on 127.0.0.1 and photographs it with headless Chromium
(Debian's ``chromium`` package: ``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=5).read()
            return
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", default="runs")
    parser.add_argument("--out", default="docs/img/dashboard.png")
    parser.add_argument("--page", default="custom_scalars",
                        help="TensorBoard plugin to show (custom_scalars, scalars, images)")
    parser.add_argument("--size", default="1400,1000")
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.exit("headless Chromium is needed: apt-get install chromium")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", args.logdir,
         "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(f"http://127.0.0.1:{port}/data/plugins_listing")
        subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--window-size={args.size}", "--virtual-time-budget=20000",
             f"--screenshot={args.out}", f"http://127.0.0.1:{port}/#{args.page}"],
            check=True, timeout=180, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        server.kill()
        server.wait()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
