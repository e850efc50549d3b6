"""The paper's width sweep: LeNet-5 at several widths, with and without batch norm.

Schaub & Hotaling ("Assessing Intelligence in Artificial Neural Networks", 2020)
found on MNIST that the LeNet-5 of the highest aIQ was narrow, a little less
accurate than the most accurate one with far fewer parameters, and that batch
norm raises efficiency.  This script is ``tensorstate-callbacks sweep``: it runs
the command's own code (:mod:`tensorstate_callbacks.cli.sweep`) with the
options given::

    python examples/width_sweep.py                  # the sweep of docs/width-sweep.md
    python examples/width_sweep.py --tiny           # seconds: 2 widths, 1 epoch, 300 images
    python examples/width_sweep.py --widths 1/4,1,4 --epochs 3 --seed 1 --outdir my_sweep

Each network trains with the Lightning ``StateSpaceCallback`` and logs to its own
TensorBoard run under ``OUTDIR/runs`` (hparams: width, batch_norm, parameters).
The script prints a table of the last validation epoch of every network, names
the layers whose efficiency only measures the sample size, says whether the
paper's shape holds here, and saves ``OUTDIR/width_sweep.png`` and
``OUTDIR/table.csv``.  ``--help`` lists the options.
"""

import sys

from tensorstate_callbacks.cli import main

if __name__ == "__main__":
    # exactly the console script `tensorstate-callbacks sweep ...` (main() reads sys.argv)
    sys.argv[1:1] = ["sweep"]
    sys.exit(main())
