"""``medflow dashboard``: start the review dashboard; ``medflow dashboard add-user``."""

from __future__ import annotations

import argparse
import getpass
import os
import subprocess
import sys
from pathlib import Path

from medflow.core.errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    from medflow.dashboard.config import DEFAULT_URL, ENV_STORE_URL, Settings
    from medflow.pipelines.config import DASHBOARD_PORT

    defaults = Settings()
    parser = subparsers.add_parser("dashboard", help="start the Streamlit review dashboard")
    parser.add_argument(
        "--store-url",
        default=None,
        help=f"review store SQLAlchemy URL (default ${ENV_STORE_URL}, else {DEFAULT_URL})",
    )
    parser.add_argument(
        "--workdir",
        default=defaults.workdir,
        help=f"pipeline work folder with metadata/ and models/ (default {defaults.workdir})",
    )
    parser.add_argument(
        "--mlmd-db", default="", help="one ML Metadata SQLite file (default: WORKDIR/metadata/*)"
    )
    parser.add_argument(
        "--mlmd-config",
        default="",
        help="text-format ML Metadata ConnectionConfig (MySQL) or MetadataStoreClientConfig "
        "(gRPC) file; used instead of SQLite",
    )
    parser.add_argument(
        "--models-dir", default="", help="pushed models base folder (default: WORKDIR/models)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DASHBOARD_PORT,
        help=f"HTTP port (default {DASHBOARD_PORT}; TF Serving's REST API keeps 8501)",
    )
    parser.add_argument("--address", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.set_defaults(func=_run)
    sub = parser.add_subparsers(dest="dashboard_command", metavar="ACTION")
    add = sub.add_parser(
        "add-user",
        help="create or update a local user; the password is read from a prompt or stdin",
    )
    add.add_argument("name")
    add.add_argument("--role", choices=("reviewer", "admin"), required=True)
    # SUPPRESS keeps a --store-url given before "add-user" instead of resetting it.
    add.add_argument("--store-url", default=argparse.SUPPRESS, help="review store SQLAlchemy URL")
    add.set_defaults(func=_add_user)
    sample = sub.add_parser(
        "sample-data",
        help="queue sample cases to try the review page: phantom cases with made-up scores "
        "and cases with real reference masks (HC18 annotations), named as samples",
    )
    sample.add_argument("--out", required=True, metavar="DIR", help="folder for images and masks")
    sample.add_argument(
        "--hc18",
        default=None,
        metavar="DIR",
        help="HC18 folder (default: shared/data/hc18 when present, else a pydicom test image)",
    )
    sample.add_argument("--store-url", default=argparse.SUPPRESS, help="review store URL")
    sample.set_defaults(func=_sample_data)


def _store_url(args: argparse.Namespace) -> str:
    """--store-url, else $MEDFLOW_STORE_URL, else the default SQLite file."""
    from medflow.dashboard.config import store_url_from_env

    return args.store_url or store_url_from_env()


def _run(args: argparse.Namespace) -> int:
    from medflow.dashboard.config import APP_SCRIPT, Settings
    from medflow.dashboard.store import ReviewStore

    settings = Settings(
        store_url=_store_url(args),
        workdir=args.workdir,
        mlmd_db=args.mlmd_db,
        mlmd_config=args.mlmd_config,
        models_dir=args.models_dir,
    )
    if args.mlmd_config:
        from medflow.dashboard.lineage import config_from_file

        config_from_file(args.mlmd_config)  # a bad file fails here, not on the Runs page
    ReviewStore(settings.store_url).close()  # fail here, with a clear message, if unusable
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(APP_SCRIPT),
        "--server.port", str(args.port), "--server.address", args.address,
        "--server.headless", "true", "--browser.gatherUsageStats", "false",
        # Clinicians get the app, not Streamlit's developer menu ("Deploy", rerun, settings).
        "--client.toolbarMode", "viewer",
    ]  # fmt: skip
    return subprocess.call(cmd, env={**os.environ, **settings.to_env()})


def read_password(stream=None) -> str:
    """Reads a password: prompted twice on a terminal, else the first line of stdin."""
    stream = stream or sys.stdin
    if stream.isatty():
        first = getpass.getpass("Password: ")
        if first != getpass.getpass("Repeat password: "):
            raise InputError("the two passwords differ; run add-user again")
        return first
    line = stream.readline().rstrip("\r\n")
    if not line:
        raise InputError('no password on stdin (pipe it in, e.g. `printf %s "$PW" | medflow ...`)')
    return line


def _add_user(args: argparse.Namespace) -> int:
    from medflow.dashboard.store import ReviewStore

    password = read_password()
    store = ReviewStore(_store_url(args))
    try:
        user = store.add_user(args.name, password, args.role)
    finally:
        store.close()
    print(f"user {user.username} ({user.role}) saved in {_store_url(args)}")
    return 0


def _sample_data(args: argparse.Namespace) -> int:
    from medflow.commands.demo import default_data_dir
    from medflow.core.tasks import DEFAULT_TASK, mask_review_task
    from medflow.dashboard.store import ReviewStore
    from medflow.workflows.review_samples import seed_masks, seed_store

    hc18 = Path(args.hc18) if args.hc18 else default_data_dir() / "hc18"
    if args.hc18 and not hc18.is_dir():
        raise InputError(f"--hc18 {hc18} is not a folder; pass the HC18 folder of shared/data")
    out = Path(args.out)
    store = ReviewStore(_store_url(args))
    try:
        phantoms = seed_store(store, out / "phantoms", 6, model="sample-phantom", version="sample")
        masks = seed_masks(store, out, hc18_dir=hc18 if hc18.is_dir() else None)
    finally:
        store.close()
    print(
        f"queued {len(phantoms)} phantom {DEFAULT_TASK} case(s) and {len(masks)} "
        f"{mask_review_task()} case(s) with reference masks in {_store_url(args)}; files under {out}"
    )
    return 0
