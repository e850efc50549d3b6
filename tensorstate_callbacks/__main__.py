"""``python -m tensorstate_callbacks`` runs the command line."""

import sys

from .cli import main

sys.exit(main())
