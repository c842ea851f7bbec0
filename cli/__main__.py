"""`python -m cli ...` is the `sdaas` command."""

import sys

from cli.main import main

if __name__ == "__main__":  # device processes are spawned: they import this module too
    sys.exit(main())
