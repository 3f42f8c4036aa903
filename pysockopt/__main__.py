"""``python -m pysockopt``: the same as the ``pysockopt`` command."""

import sys

from .cli import main

sys.exit(main())
