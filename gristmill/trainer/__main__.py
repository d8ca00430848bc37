"""`python -m gristmill.trainer` (what torchrun launches): the same as the `trainer` command."""
import sys

from gristmill.trainer.cli import main

sys.exit(main())
