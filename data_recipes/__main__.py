"""`python -m data_recipes ...` is `ofa-prepare ...` (works before the console script is installed)."""

import sys

from data_recipes.cli import main

sys.exit(main())
