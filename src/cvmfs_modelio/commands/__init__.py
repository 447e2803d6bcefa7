"""One module per ``cvmfs-modelio`` subcommand; each exposes ``register(subparsers)``."""
