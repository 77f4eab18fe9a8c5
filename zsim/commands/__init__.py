"""One module per `zsim` subcommand: HELP, add_arguments(parser), run(args) -> int."""
