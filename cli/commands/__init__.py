"""One module per `sdaas` command, each with `add_parser(subparsers)` (its flags and help;
returns its parser) and `run(args, settings) -> int`, so a command is read, and changed,
in one place. `cli/main.py` lists them."""
