"""``medflow serve``: the embedded TF Serving-compatible model server (gRPC + REST)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve SavedModels over TF Serving's gRPC and REST APIs",
        description=(
            "Serve every <base>/<name>/<version>/saved_model.pb (or the models of a TF Serving "
            "models.config) with TF Serving's gRPC (PredictionService, ModelService) and REST "
            "APIs, following new versions as they appear."
        ),
    )
    parser.add_argument("--model-base", help="folder of <name>/<version>/ SavedModels")
    parser.add_argument(
        "--model-config", help="TF Serving ModelServerConfig text file (models.config)"
    )
    parser.add_argument(
        "--batching-parameters",
        help="TF Serving batching parameters text file (enables server-side batching)",
    )
    parser.add_argument(
        "--enable-batching", action="store_true", help="batch with TF Serving's default parameters"
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 in a container)")
    parser.add_argument("--grpc-port", type=int, default=8500, help="gRPC port (default 8500)")
    parser.add_argument(
        "--rest-port", type=int, default=8501, help="REST port (default 8501, -1 = off)"
    )
    parser.add_argument(
        "--poll-seconds", type=float, default=1.0, help="model base re-scan interval (0 = off)"
    )
    parser.add_argument(
        "--max-message-mb", type=float, default=256, help="largest gRPC message / REST body (MiB)"
    )
    parser.add_argument(
        "--keep-freed-memory",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="reuse freed request buffers instead of returning them to the kernel (glibc malloc "
        "thresholds; fewer page faults per large request, more resident memory; default on)",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from serving.config import BatchingConfig, read_batching_parameters
    from serving.memory import keep_freed_memory
    from serving.server import ModelServer, ServerOptions, resolve_models

    if args.keep_freed_memory:
        keep_freed_memory()
    batching = None
    if args.batching_parameters:
        batching = read_batching_parameters(args.batching_parameters)
    elif args.enable_batching:
        batching = BatchingConfig()
    limit = int(args.max_message_mb * 2**20)
    options = ServerOptions(
        host=args.host,
        grpc_port=args.grpc_port,
        rest_port=None if args.rest_port < 0 else args.rest_port,
        max_message_bytes=limit,
        max_body_bytes=limit,
        poll_seconds=args.poll_seconds,
        batching=batching,
    )
    server = ModelServer(resolve_models(args.model_base, args.model_config), options).start()
    rest = f", REST on {args.host}:{server.rest_port}" if server.rest_port else ""
    print(
        f"serving {', '.join(server.manager.model_names)}: gRPC on {args.host}:{server.grpc_port}{rest}",
        flush=True,
    )
    try:
        server.wait()
    finally:
        server.stop()
    return 0
