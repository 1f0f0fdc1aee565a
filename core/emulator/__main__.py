"""`python -m gembatch.core.emulator`: the same as the `gembatch-emulator` command."""

from .cli import main

raise SystemExit(main())
