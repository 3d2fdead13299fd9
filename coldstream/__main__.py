"""``python -m coldstream`` is the ``coldstream`` console script."""

import sys

from coldstream.cli import main

sys.exit(main())
