"""`python -m orchestrator.cli ...`: the `orchestrator` command without its console script."""

import sys

from . import main

sys.exit(main())
