"""The `medflow` console script: discovers subcommands in :mod:`medflow.commands`."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys
import warnings

from medflow import __version__, commands
from medflow.core.errors import MedflowError

OWN_PACKAGES = ("medflow", "components", "pipelines", "serving", "dashboard")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medflow",
        description="End-to-end MLOps for deep learning on medical images.",
    )
    parser.add_argument("--version", action="version", version=f"medflow {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"medflow.commands.{info.name}")
        module.register(sub)
    return parser


def _quiet_third_party() -> None:
    # TensorFlow's C++ start-up chatter and google-api-core's Python-version notices say
    # nothing a medflow user can act on; MEDFLOW_VERBOSE_LIBS=1 keeps them.
    if os.environ.get("MEDFLOW_VERBOSE_LIBS"):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"google$")


def main(argv: list[str] | None = None) -> int:
    _quiet_third_party()
    parser = build_parser()
    args = parser.parse_args(argv)
    # Third-party libraries (Beam, absl, TF) log at INFO freely: warnings only from them,
    # INFO (or DEBUG with -v) from medflow's own packages.
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    for package in OWN_PACKAGES:
        logging.getLogger(package).setLevel(logging.DEBUG if args.verbose else logging.INFO)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except MedflowError as exc:
        print(f"medflow {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
