"""`python -m cli ...` is the `sdaas` command."""

import sys

from cli.main import main

sys.exit(main())
