"""CLI subcommands. Each module defines ``register(subparsers)`` adding its parsers.

Every parser sets ``func`` to a callable taking the parsed ``argparse.Namespace`` and
returning an exit code; the functions stay thin wrappers over typed library calls.
"""


def comma_list(text: str) -> list[str]:
    """The non-empty, stripped items of a comma-separated option value."""
    return [item.strip() for item in text.split(",") if item.strip()]
