"""Packing float32 activations as probes see them: one batch of each layout,
with each instruction set the kernels have (portable C, SSE2, AVX2), beside
NumPy's ``x > 0`` (which reads the same bytes and writes eight times more).

    python benchmarks/bench_pack.py [--repeats 30] [--baseline PATH/_pack.so]

Every configuration packs the same array in turn (interleaved), on one
thread, as probes do; the table gives the median milliseconds of each and
checks every output against ``np.packbits``.  Before each timed call the
batch is written afresh (untimed), so it is as hot in the caches as after
the layer that made it: as much of it as the caches hold.  ``--baseline``
adds a column for another build of the kernel module (for example one built
from an earlier commit), loaded from its file.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time

import numpy as np

from tensorstate_callbacks.core import _pack, packing

LAYOUTS = [  # (what, shape, neuron axis)
    ("LeNet conv_1, NCHW", (200, 20, 24, 24), 1),
    ("LeNet conv_2, NCHW", (200, 50, 8, 8), 1),
    ("Keras conv, NHWC 20", (200, 24, 24, 20), 3),
    ("ResNet stage 1, NCHW 64x32x32", (100, 64, 32, 32), 1),
    ("ResNet stage 2, NCHW 128x16x16", (100, 128, 16, 16), 1),
    ("ResNet stage 4, NCHW 512x4x4", (100, 512, 4, 4), 1),
    ("Transformer d=256", (32, 128, 256), 2),
    ("Transformer FF 2048", (32, 128, 2048), 2),
]


def load_baseline(path: str):
    """Another build of the kernel module, from its file."""
    spec = importlib.util.spec_from_file_location("_pack", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def packer(x: np.ndarray, axis: int, module=None, instruction_set: str | None = None):
    """A function packing ``x`` once (through ``module``'s kernel when given)."""
    plan = packing.layout(x.shape, x.strides, x.dtype, axis)
    out = np.empty((plan.num_states, plan.num_bytes), dtype=np.uint8)
    address = x.__array_interface__["data"][0]

    def run():
        if instruction_set is not None:
            _pack.limit_instruction_set(instruction_set)
        if module is None:
            packing.pack_layout(x, plan, out, threads=1)
        else:
            module.pack_rows(address, plan.shape, plan.strides, plan.kind, out, 1)
        return out
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--baseline", help="another build's _pack extension file")
    args = parser.parse_args()
    sets = list(_pack.INSTRUCTION_SETS)
    print(f"float32, one thread, median of {args.repeats}; this CPU's best: "
          f"{_pack.instruction_set()}")
    columns = (["baseline"] if args.baseline else []) + sets + ["x > 0"]
    print("| layout | MB | " + " | ".join(f"{c} ms" for c in columns)
          + " | AVX2 / x > 0 |\n|---" * 1 + "|---" * (len(columns) + 2) + "|")
    rng = np.random.default_rng(0)
    baseline = load_baseline(args.baseline) if args.baseline else None
    for what, shape, axis in LAYOUTS:
        source = rng.standard_normal(shape).astype(np.float32)
        x = source.copy()
        expected = np.packbits(np.moveaxis(x, axis, -1).reshape(-1, shape[axis]) > 0, axis=-1,
                               bitorder="little")
        runs = {name: packer(x, axis, instruction_set=name) for name in sets}
        if baseline is not None:
            runs = {"baseline": packer(x, axis, module=baseline), **runs}
        runs["x > 0"] = lambda x=x: np.greater(x, 0)
        times = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, run in runs.items():
                np.copyto(x, source)  # as the layer leaves it
                start = time.perf_counter()
                result = run()
                times[name].append(time.perf_counter() - start)
                if name != "x > 0":
                    np.testing.assert_array_equal(result, expected, err_msg=name)
        _pack.limit_instruction_set("avx2")
        median = {name: statistics.median(t) * 1e3 for name, t in times.items()}
        print(f"| {what} | {x.nbytes / 1e6:.1f} | "
              + " | ".join(f"{median[c]:.3f}" for c in columns)
              + f" | {median[_pack.instruction_set()] / median['x > 0']:.2f} |")


if __name__ == "__main__":
    main()
