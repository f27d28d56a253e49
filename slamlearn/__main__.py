"""``python -m slamlearn`` runs the command line (see :mod:`slamlearn.cli`)."""

import sys

from .cli import main

sys.exit(main())
