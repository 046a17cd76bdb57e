"""``medflow serve``: the embedded TF Serving-compatible model server (gRPC + REST)."""

from __future__ import annotations

import argparse
import sys


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
        "--grpc-channel-arguments",
        default="",
        metavar="NAME=VALUE,...",
        help="more gRPC server arguments, as TF Serving's --grpc_channel_arguments, e.g. "
        "grpc.max_connection_age_ms=60000 (clients reconnect, so load balanced per connection "
        "spreads again over --workers or replicas)",
    )
    parser.add_argument(
        "--keep-freed-memory",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="reuse freed request buffers instead of returning them to the kernel (glibc malloc "
        "thresholds; fewer page faults per large request, more resident memory; default on)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes sharing the ports (SO_REUSEPORT; default 1). More help where one "
        "process leaves cores idle (small models, or many cores) and clients use several "
        "connections; each loads every model",
    )
    # Internal: this process is one of --workers (shared ports, metrics shared in DIR).
    parser.add_argument("--worker-of", metavar="DIR", help=argparse.SUPPRESS)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from medflow.serving.config import (
        BatchingConfig,
        models_in_base,
        parse_grpc_channel_arguments,
        read_batching_parameters,
    )
    from medflow.serving.memory import keep_freed_memory
    from medflow.serving.server import (
        ModelServer,
        ServerOptions,
        resolve_models,
        run_until_stopped,
    )

    channel_arguments = parse_grpc_channel_arguments(args.grpc_channel_arguments)  # fail early
    if args.workers != 1:
        return _run_workers(args)
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
        reuse_port=bool(args.worker_of),
        grpc_channel_arguments=channel_arguments,
        metrics_dir=args.worker_of,
        models_poll_seconds=args.poll_seconds,
    )
    models = resolve_models(args.model_base, args.model_config)
    # New model folders under --model-base are served as they appear (TF Serving does the
    # same for a config file with --model_config_file_poll_wait_seconds).
    reload = (lambda: models_in_base(args.model_base)) if not args.model_config else None
    return run_until_stopped(ModelServer(models, options, reload=reload))


def _run_workers(args: argparse.Namespace) -> int:
    from medflow.serving.server import resolve_models
    from medflow.serving.workers import free_port, serve_with_workers

    names = [m.name for m in resolve_models(args.model_base, args.model_config)]  # fail early
    grpc_port = args.grpc_port or free_port(args.host)
    rest_port = args.rest_port if args.rest_port != 0 else free_port(args.host)

    def worker_command(metrics_dir: str) -> list[str]:
        cmd = [sys.executable, "-m", "medflow.cli"] + (["-v"] if args.verbose else [])
        cmd += ["serve", "--workers", "1", "--worker-of", metrics_dir, "--host", args.host]
        cmd += ["--grpc-port", str(grpc_port), "--rest-port", str(rest_port)]
        cmd += [
            "--poll-seconds",
            str(args.poll_seconds),
            "--max-message-mb",
            str(args.max_message_mb),
        ]
        for flag, value in (
            ("--model-base", args.model_base),
            ("--model-config", args.model_config),
            ("--batching-parameters", args.batching_parameters),
            ("--grpc-channel-arguments", args.grpc_channel_arguments),
        ):
            if value:
                cmd += [flag, str(value)]
        if args.enable_batching:
            cmd.append("--enable-batching")
        cmd.append("--keep-freed-memory" if args.keep_freed_memory else "--no-keep-freed-memory")
        return cmd

    def announce(pids: list[int]) -> None:
        rest = f", REST on {args.host}:{rest_port}" if rest_port >= 0 else ""
        print(
            f"serving {', '.join(names)}: gRPC on {args.host}:{grpc_port}{rest} "
            f"({len(pids)} worker processes: {' '.join(map(str, pids))})",
            flush=True,
        )

    return serve_with_workers(worker_command, args.workers, announce)
