"""``python -m svae_core``: see :mod:`svae_core.cli`."""

import sys

from svae_core.cli import main

sys.exit(main())
