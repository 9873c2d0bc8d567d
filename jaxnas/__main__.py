"""``python -m jaxnas`` is the ``jaxnas`` command."""

import sys

from jaxnas.cli import entry

sys.exit(entry())
