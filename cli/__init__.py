"""The top layer: the `sdaas` command line (`cli/main.py`, a module per command in
`cli/commands/`) and the demos it runs."""
