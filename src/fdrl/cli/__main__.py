"""``python -m fdrl.cli`` (e.g. under torchrun): the ``fdrl`` command."""

import sys

from fdrl.cli import main

sys.exit(main())
