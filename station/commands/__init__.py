"""One module per ``station`` subcommand: argument parsing and wiring only."""
