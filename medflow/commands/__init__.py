"""CLI subcommands. Each module defines ``register(subparsers)`` adding its parsers.

Every parser sets ``func`` to a callable taking the parsed ``argparse.Namespace`` and
returning an exit code; the functions stay thin wrappers over typed library calls.
"""
