"""``python -m jaxnas`` is the ``jaxnas`` command."""

import sys

from jaxnas.cli import main

sys.exit(main())
