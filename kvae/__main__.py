"""`python -m kvae` runs the `kvae` command (what `torchrun ... -m kvae fit` starts on every rank)."""

import sys

from kvae.cli import main

sys.exit(main())
