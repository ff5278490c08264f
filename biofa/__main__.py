"""``python -m biofa``: the ``biofa`` command (see :mod:`biofa.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
