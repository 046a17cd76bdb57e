"""``medflow-model-server``: the embedded server under ``tensorflow_model_server``'s command line.

The console script takes TF Serving's flags unchanged (``serving.tfs_flags``); ``medflow
model-server FLAGS...`` is the same. ``medflow serve`` is the friendlier front door over the
same server.
"""

from __future__ import annotations

import argparse
import sys

PROG = "medflow-model-server"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "model-server",
        help="the model server with tensorflow_model_server's flags (as medflow-model-server)",
        description="Run the embedded model server with tensorflow_model_server's own flags, "
        "e.g. medflow model-server --port=8500 --rest_api_port=8501 --model_name=m "
        "--model_base_path=/models/m",
        add_help=False,
        prefix_chars="+",  # every --flag after the command is TF Serving's, read by run()
    )
    parser.add_argument("flags", nargs="*", help="tensorflow_model_server flags")
    parser.set_defaults(func=lambda args: run(args.flags))


def run(argv: list[str]) -> int:
    """Parse TF Serving's flags, then serve until stopped."""
    from medflow.serving import tfs_flags

    if any(a in ("--help", "-h", "--helpfull") for a in argv):
        print(tfs_flags.usage())
        return 0
    values = tfs_flags.parse_flags(argv)
    if values["version"]:
        from medflow import __version__

        print(f"TensorFlow ModelServer: medflow {__version__} (medflow-model-server)")
        return 0
    plan = tfs_flags.plan_from_flags(values)
    _set_tensorflow_threads(plan.intra_op_threads, plan.inter_op_threads)

    from medflow.serving.config import read_model_config
    from medflow.serving.server import ModelServer, ServerOptions, run_until_stopped

    config = plan.reload_config
    reload = (lambda: read_model_config(config)) if config else None
    server = ModelServer(plan.models, ServerOptions(**plan.options), reload=reload)
    return run_until_stopped(server)


def _set_tensorflow_threads(intra: int, inter: int) -> None:
    if not (intra or inter):
        return
    import tensorflow as tf

    if intra:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    if inter:
        tf.config.threading.set_inter_op_parallelism_threads(inter)


def main(argv: list[str] | None = None) -> int:
    """The ``medflow-model-server`` console script."""
    from medflow.cli import main as medflow_main

    return medflow_main(["model-server", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
