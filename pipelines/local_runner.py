"""Run the pipeline on this machine: LocalDagRunner, SQLite ML Metadata, one work folder.

Layout under ``workdir`` (default ``.medflow/``)::

    pipelines/<pipeline_name>/      artifacts (pipeline_root)
    metadata/<pipeline_name>.sqlite ML Metadata
    deid.key                        de-identification key (created on first use, mode 0600)
    models/<model_name>/<version>/  pushed models (TF Serving layout + contract.json)
    logs/<pipeline_name>-<time>.log full log of each run
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from medflow.components.dicom.keys import ensure_key_file
from medflow.core.errors import InputError, MedflowError
from medflow.pipelines.config import DEFAULT_WORKDIR, PipelineConfig
from medflow.pipelines.preflight import check_inputs
from medflow.pipelines.progress import ProgressTracker, capture_tfx_logs, console_to_file
from medflow.pipelines.recovery import close_interrupted_runs, run_lock
from medflow.pipelines.run_summary import metadata_store, summarize

# Small inputs: no Beam arguments at all. Beam's defaults are already the in-process runner
# with one worker, and any argument makes each TFX Beam executor build a TFX sdist to ship to
# remote workers (StatisticsGen, Transform, Evaluator: ~4 s each on 2 cores, for nothing).
LOCAL_BEAM_ARGS: tuple[str, ...] = ()
# From this many input files on, with at least MULTI_PROCESS_MIN_CPUS cores, Beam's
# multi-process runner: its worker start-up and pickling round trips pay off only there.
MULTI_PROCESS_MIN_FILES = 50_000
MULTI_PROCESS_MIN_CPUS = 4


class PipelineFailed(MedflowError):
    """A pipeline component failed; the message names it and the log file."""


def workdir_paths(workdir: str | Path, pipeline_name: str) -> dict[str, Path]:
    """Absolute paths of the work-folder layout (see module docstring)."""
    root = Path(workdir).resolve()
    return {
        "root": root,
        "pipeline_root": root / "pipelines" / pipeline_name,
        "metadata": root / "metadata" / f"{pipeline_name}.sqlite",
        "models": root / "models",
        "logs": root / "logs",
        "deid_key": root / "deid.key",
    }


def run_local(
    config: PipelineConfig,
    *,
    workdir: str | Path = DEFAULT_WORKDIR,
    beam_pipeline_args: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = print,
    quiet_console: bool = True,
) -> dict[str, Any]:
    """Run the whole pipeline locally and summarise what happened.

    Args:
        config: what to run; its data root, manifest and credentials file are resolved to
            absolute paths here.
        workdir: work folder holding artifacts, metadata, models and logs.
        beam_pipeline_args: Beam options (None: :func:`local_beam_args` of the data).
        progress: called with one line per component event (None: silent).
        quiet_console: send all console output of the run (TFX, Beam, Keras, pip) to the
            log file; ``print`` progress lines still reach the console.

    Returns:
        ``{"components": {id: {"status", "seconds"}}, "metrics": {slice: {...}},
        "blessed": bool, "pushed": bool, "model_path": str | None, "model_version",
        "anomalies": [...], "ingest": {...}, "task", "workdir", "log_file",
        "wall_seconds"}``.
    """
    config = _resolved(config)
    paths = workdir_paths(workdir, config.pipeline_name)
    for key in ("pipeline_root", "models", "logs"):
        paths[key].mkdir(parents=True, exist_ok=True)
    paths["metadata"].parent.mkdir(parents=True, exist_ok=True)
    deid_key = str(ensure_key_file(paths["deid_key"])) if config.input_format == "dicom" else ""
    check_inputs(config, deid_key)  # one-line errors now, not a component failing later
    # Seconds to import: after the checks. Not ``tfx.v1``, which also imports the Google
    # Cloud extensions (~4 s of CPU).
    from tfx.orchestration import metadata

    from medflow.pipelines.pipeline import create_pipeline

    pipeline = create_pipeline(
        config,
        pipeline_root=str(paths["pipeline_root"]),
        serving_model_dir=str(paths["models"]),
        deid_key_file=deid_key,
        metadata_connection_config=metadata.sqlite_metadata_connection_config(
            str(paths["metadata"])
        ),
        beam_pipeline_args=(
            local_beam_args(config.data_root) if beam_pipeline_args is None else beam_pipeline_args
        ),
    )
    log_file = paths["logs"] / f"{config.pipeline_name}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    start = time.perf_counter()
    with run_lock(paths["metadata"].with_suffix(".lock")):
        _recover(paths["metadata"], progress)
        tracker = _run_with_progress(pipeline, log_file, progress, quiet_console)
    wall = time.perf_counter() - start
    with capture_tfx_logs(ProgressTracker(None), log_file):  # TFMA's warnings: to the log
        summary = summarize(paths["metadata"], tracker)
    summary.update(
        task=config.task, workdir=str(paths["root"]), log_file=str(log_file), wall_seconds=wall
    )
    return summary


def local_beam_args(data_root: str, cpus: int | None = None) -> tuple[str, ...]:
    """Beam options for a local run on ``data_root``: :data:`LOCAL_BEAM_ARGS` (in-process)
    unless the folder holds :data:`MULTI_PROCESS_MIN_FILES` files or more and the machine
    has :data:`MULTI_PROCESS_MIN_CPUS` cores or more (a DICOMweb URL: in-process)."""
    cpus = (os.cpu_count() or 1) if cpus is None else cpus
    if cpus < MULTI_PROCESS_MIN_CPUS or not Path(data_root).is_dir():
        return LOCAL_BEAM_ARGS
    count = 0
    for _, _, files in os.walk(data_root):
        count += len(files)
        if count >= MULTI_PROCESS_MIN_FILES:
            workers = min(cpus, 8)
            return ("--direct_running_mode=multi_processing", f"--direct_num_workers={workers}")
    return LOCAL_BEAM_ARGS


def _recover(metadata: Path, progress: Callable[[str], None] | None) -> None:
    """Closes what a killed earlier run left RUNNING (see :mod:`medflow.pipelines.recovery`)."""
    if not metadata.exists():
        return
    done = close_interrupted_runs(metadata_store(metadata))
    if done.executions and progress:
        progress(
            f"closed {len(done.executions)} execution(s) left running by an interrupted run "
            f"(marked FAILED) and removed {len(done.removed)} partial output folder(s)"
        )


def _run_with_progress(
    pipeline, log_file: Path, progress: Callable[[str], None] | None, quiet_console: bool
) -> ProgressTracker:
    """LocalDagRunner on ``pipeline``: one progress line per component event, everything
    else the run prints to ``log_file``; a failure names the component and the log."""
    from tfx.orchestration.local.local_dag_runner import LocalDagRunner

    quiet = console_to_file(log_file) if quiet_console else contextlib.nullcontext(None)
    with quiet as console:
        if console is not None and progress is print:
            progress = console
        tracker = ProgressTracker(progress)
        if progress:
            progress(f"running {pipeline.pipeline_info.pipeline_name} (full log: {log_file})")
        with capture_tfx_logs(tracker, log_file):
            try:
                LocalDagRunner().run(pipeline)
            except Exception as exc:
                failed = tracker.current or "the pipeline"
                logging.getLogger(__name__).error("pipeline failed", exc_info=True)
                raise PipelineFailed(
                    f"{failed} failed: {short_error(exc)} (full log: {log_file})"
                ) from exc
    return tracker


# A component's error can hold megabytes (e.g. TFMA quoting raw tf.Examples): the console
# line keeps its start; the log file has all of it.
MAX_ERROR_CHARS = 300


def short_error(exc: BaseException) -> str:
    """``Type: message`` on one line, cut to :data:`MAX_ERROR_CHARS`."""
    text = " ".join(f"{exc.__class__.__name__}: {exc}".split())
    if len(text) <= MAX_ERROR_CHARS:
        return text
    return f"{text[: MAX_ERROR_CHARS - 40]}... ({len(text):,} characters; see the log)"


def _resolved(config: PipelineConfig) -> PipelineConfig:
    """``config`` with its local paths checked and made absolute."""
    data_root = config.data_root
    is_url = data_root.startswith(("http://", "https://"))
    if is_url and config.input_format != "dicom":
        raise InputError(f"{data_root}: a DICOMweb URL needs input_format='dicom'")
    if not is_url:
        if not data_root or not Path(data_root).exists():
            raise InputError(f"data folder {data_root} does not exist; pass an existing folder")
        data_root = str(Path(data_root).resolve())
    manifest = config.label_manifest
    if manifest and not Path(manifest).is_file():
        raise InputError(f"label manifest {manifest} not found; pass an existing CSV")
    auth = config.dicomweb_auth_file
    return config.replace(
        data_root=data_root,
        label_manifest=str(Path(manifest).resolve()) if manifest else "",
        dicomweb_auth_file=str(Path(auth).resolve()) if auth else "",
    )
