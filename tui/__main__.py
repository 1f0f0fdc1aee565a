"""`python -m gembatch.tui`: the same as the `gembatch-tui` command."""

import sys

from .launch import main

sys.exit(main())
