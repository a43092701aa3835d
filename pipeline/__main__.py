"""`python -m pipeline` runs the `emo-prep` command (for environments without the script on PATH)."""

import sys

from .cli import main

sys.exit(main())
