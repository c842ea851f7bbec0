"""The top layer: the `sdaas` command line (`cli/main.py`) and the demos it runs."""
