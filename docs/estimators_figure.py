"""Make docs/img/estimators.png: how the entropy estimators behave as the number
of states N grows, on a known distribution.

The distribution: 2**14 states whose probabilities fall off as a Zipf law
(exponent 1), like the few common, many rare states of a layer.  Its true
entropy is known exactly.  For each N, 20 samples of N states are drawn; the
figure shows the mean of each estimator (plug-in, Miller-Madow, Chao-Shen) and
the ceiling log2(N).  Run: ``python docs/estimators_figure.py`` (a few seconds).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tensorstate_callbacks.core.metrics import ESTIMATORS, entropy

STATES = 1 << 14
SIZES = [2 ** k for k in range(6, 20)]
SAMPLES = 20


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    p = 1.0 / np.arange(1, STATES + 1)
    p /= p.sum()
    truth = float(-np.sum(p * np.log2(p)))
    means = {name: [] for name in ESTIMATORS}
    for size in SIZES:
        values = {name: [] for name in ESTIMATORS}
        for _ in range(SAMPLES):
            counts = np.bincount(rng.choice(STATES, size=size, p=p))
            counts = counts[counts > 0]
            for name in ESTIMATORS:
                values[name].append(entropy(counts, estimator=name))
        for name in ESTIMATORS:
            means[name].append(float(np.mean(values[name])))
    figure, axes = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for name in ESTIMATORS:
        axes.plot(SIZES, means[name], marker="o", markersize=3, label=name)
    axes.plot(SIZES, np.log2(SIZES), linestyle=":", color="gray", label="ceiling log2(N)")
    axes.axhline(truth, color="black", linewidth=1, label=f"true entropy {truth:.2f} bits")
    axes.set_xscale("log", base=2)
    axes.set_ylim(0, truth + 2)
    axes.set_xlabel("states measured N")
    axes.set_ylabel("entropy estimate (bits)")
    axes.set_title(f"Zipf distribution over {STATES:,} states, mean of {SAMPLES} samples")
    axes.legend(fontsize=8)
    figure.tight_layout()
    out = Path(__file__).parent / "img" / "estimators.png"
    figure.savefig(out)
    print(f"true entropy {truth:.3f} bits; wrote {out}")
    for index, size in enumerate(SIZES):
        print(f"N={size:>7,}: " + ", ".join(f"{name} {means[name][index]:.3f}"
                                           for name in ESTIMATORS))


if __name__ == "__main__":
    main()
