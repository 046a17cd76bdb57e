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
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from medflow.components.dicom.keys import ensure_key_file
from medflow.core.errors import InputError, MedflowError
from medflow.pipelines.config import DEFAULT_MODEL_NAME, DEFAULT_PIPELINE_NAME, DEFAULT_WORKDIR
from medflow.pipelines.evaluation import BlessingThresholds
from medflow.pipelines.progress import ProgressTracker, capture_tfx_logs, console_to_file
from medflow.pipelines.run_summary import summarize
from medflow.pipelines.seg_evaluation import SegmentationThresholds

# One in-process Beam worker: on a 2-core machine extra worker processes cost more than
# they parallelise.
LOCAL_BEAM_ARGS = ("--direct_running_mode=in_memory", "--direct_num_workers=1")


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
    data_root: str | Path,
    *,
    workdir: str | Path = DEFAULT_WORKDIR,
    input_format: str = "dicom",
    label_manifest: str | Path = "",
    pipeline_name: str = DEFAULT_PIPELINE_NAME,
    model_name: str = DEFAULT_MODEL_NAME,
    image_size: int = 28,
    channels: int = 1,
    labels: Sequence[str] = ("0", "1"),
    splits: str = "train=80,eval=20",
    ingest_workers: int = 1,
    dicomweb_query: str = "",
    dicomweb_auth_file: str = "",
    hyperparameters: Mapping[str, Any] | None = None,
    thresholds: BlessingThresholds | SegmentationThresholds | None = None,
    task: str = "classification",
    enable_cache: bool = True,
    beam_pipeline_args: Sequence[str] = LOCAL_BEAM_ARGS,
    progress: Callable[[str], None] | None = print,
    quiet_console: bool = True,
) -> dict[str, Any]:
    """Run the whole pipeline locally and summarise what happened.

    Args:
        data_root: DICOM folder or DICOMweb root URL (``input_format="dicom"``) or a folder with
            ``train/`` and ``eval/`` TFRecords (``"tfrecord"``).
        workdir: work folder holding artifacts, metadata, models and logs.
        input_format: ``dicom`` or ``tfrecord``.
        label_manifest: label CSV for DICOM ingestion.
        pipeline_name: pipeline (and MLMD context) name.
        model_name: TF Serving model name.
        image_size: model input rows = cols.
        channels: 1 or 3.
        labels: class names.
        splits: DicomExampleGen split spec.
        ingest_workers: DicomExampleGen worker processes.
        dicomweb_query: QIDO-RS query (JSON) when ``data_root`` is a DICOMweb root URL.
        dicomweb_auth_file: PACS credentials file (JSON), if needed.
        hyperparameters: Trainer overrides (see ``components.models.hparams.HParams``).
        thresholds: blessing thresholds.
        task: ``classification`` or ``segmentation`` (Trainer module and Evaluator config).
        enable_cache: reuse unchanged component outputs.
        beam_pipeline_args: Beam options.
        progress: called with one line per component event (None: silent).
        quiet_console: send all console output of the run (TFX, Beam, Keras, pip) to the
            log file; ``print`` progress lines still reach the console.

    Returns:
        ``{"components": {id: {"status", "seconds"}}, "metrics": {slice: {...}},
        "blessed": bool, "pushed": bool, "model_path": str | None, "model_version",
        "anomalies": [...], "ingest": {...}, "workdir", "log_file", "wall_seconds"}``.
    """
    from tfx import v1 as tfx

    from medflow.pipelines.pipeline import create_pipeline, model_module_paths

    is_url = str(data_root).startswith(("http://", "https://"))
    if is_url and input_format != "dicom":
        raise InputError(f"{data_root}: a DICOMweb URL needs input_format='dicom'")
    if not is_url:
        data_root = Path(data_root)
        if not data_root.exists():
            raise InputError(f"data folder {data_root} does not exist; pass an existing folder")
    if label_manifest and not Path(label_manifest).is_file():
        raise InputError(f"label manifest {label_manifest} not found; pass an existing CSV")
    paths = workdir_paths(workdir, pipeline_name)
    for key in ("pipeline_root", "models", "logs"):
        paths[key].mkdir(parents=True, exist_ok=True)
    paths["metadata"].parent.mkdir(parents=True, exist_ok=True)
    transform_module, trainer_module = model_module_paths(task)
    deid_key_file = str(ensure_key_file(paths["deid_key"])) if input_format == "dicom" else ""
    pipeline = create_pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=str(paths["pipeline_root"]),
        data_root=str(data_root) if is_url else str(data_root.resolve()),
        transform_module=transform_module,
        trainer_module=trainer_module,
        serving_model_dir=str(paths["models"]),
        label_manifest=str(Path(label_manifest).resolve()) if label_manifest else "",
        input_format=input_format,
        splits=splits,
        deid_key_file=deid_key_file,
        ingest_workers=ingest_workers,
        dicomweb_query=dicomweb_query,
        dicomweb_auth_file=str(Path(dicomweb_auth_file).resolve()) if dicomweb_auth_file else "",
        image_size=image_size,
        channels=channels,
        labels=labels,
        model_name=model_name,
        hyperparameters=hyperparameters,
        thresholds=thresholds,
        task=task,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            str(paths["metadata"])
        ),
        beam_pipeline_args=beam_pipeline_args,
        enable_cache=enable_cache,
    )
    log_file = paths["logs"] / f"{pipeline_name}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    start = time.perf_counter()
    quiet = console_to_file(log_file) if quiet_console else contextlib.nullcontext(None)
    with quiet as console:
        if console is not None and progress is print:
            progress = console
        tracker = ProgressTracker(progress)
        if progress:
            progress(f"running {pipeline_name} (full log: {log_file})")
        with capture_tfx_logs(tracker, log_file):
            try:
                tfx.orchestration.LocalDagRunner().run(pipeline)
            except Exception as exc:
                failed = tracker.current or "the pipeline"
                logging.getLogger(__name__).error("pipeline failed", exc_info=True)
                raise PipelineFailed(
                    f"{failed} failed: {exc.__class__.__name__}: {exc} (full log: {log_file})"
                ) from exc
    wall = time.perf_counter() - start
    summary = summarize(paths["metadata"], tracker)
    summary.update(workdir=str(paths["root"]), log_file=str(log_file), wall_seconds=wall)
    return summary
