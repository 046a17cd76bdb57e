"""Predicting with a served model: DICOM files or PACS studies in, the task's results out.

The model's task plug-in (its contract's ``task``, or the task whose outputs the served
signature has) decodes the answers, writes its file outputs (e.g. DICOM SEG, overlays),
stores results back in the PACS and says what the review store records; nothing here names
a task.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from medflow.components.dicom.dicomweb import Query
from medflow.components.dicom.dicomweb_pull import pull
from medflow.core.errors import ConfigError
from medflow.core.tasks import OutputOptions, OutputReport, get_task
from medflow.dashboard.config import store_url_from_env
from medflow.serving.client import PredictionClient
from medflow.workflows.guard import GUARD_KEYS, GuardCheck
from medflow.workflows.input_check import input_screen, served_contract
from medflow.workflows.predict_volumes import predict_volume_job, volume_model

# A signature with serving_default's input and outputs plus ``heatmap`` (e.g. Grad-CAM).
EXPLAIN = "explain"


@dataclass(frozen=True)
class PredictJob:
    """One ``medflow predict`` request.

    Attributes:
        server: gRPC ``HOST:PORT``.
        model: model name on the server.
        paths: DICOM files or folders (or none, with ``study_uids`` and a DICOMweb source).
        study_uids: studies to fetch from the PACS.
        version / label / contract: which model version, and its contract file.
        batch_size: images per Predict request.
        timeout_s: deadline per request.
        push: store the results in each study of the PACS.
        outputs: the task's file outputs and settings (``review_dir`` is set from
            ``mask_dir`` when ``record``).
        record: record the predictions in the review store at ``store_url``.
        mask_dir: where review artifacts go (default: beside a SQLite store).
        strict: refuse inputs outside the contract's ``expected_input`` (else warn).
        model_base: where the served version's contract is found without ``contract``.
    """

    server: str
    model: str
    paths: tuple[str, ...] = ()
    study_uids: tuple[str, ...] = ()
    version: int | None = None
    label: str | None = None
    contract: str | None = None
    batch_size: int = 32
    timeout_s: float = 30.0
    push: bool = False
    outputs: OutputOptions = field(default_factory=OutputOptions)
    record: bool = False
    store_url: str | None = None
    mask_dir: str | None = None
    strict: bool = False
    model_base: str | None = None


@dataclass
class PredictOutcome:
    """What a prediction run produced."""

    results: list
    rejected: list
    pushed: list = field(default_factory=list)
    report: OutputReport = field(default_factory=OutputReport)
    recorded: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def task(self):
        """The task plug-in of the results (None without results)."""
        return get_task(self.results[0].task) if self.results else None


def run_predict(job: PredictJob, source=None) -> PredictOutcome:
    """Predict ``job.paths``, or ``job.study_uids`` fetched from ``source`` (a
    ``DicomwebSource``), then write, push and record as the job says."""
    if bool(job.paths) == bool(source is not None) or bool(job.study_uids) != (source is not None):
        raise ConfigError("give PATHs, or --dicomweb URL with --study UID (not both)")
    if job.push and source is None:
        raise ConfigError("--push stores results in a PACS: it needs --dicomweb and --study")
    if job.mask_dir and not job.record:
        raise ConfigError("--mask-dir is where --record saves masks: add --record")
    options = job.outputs
    if job.record:
        review_dir = job.mask_dir or default_mask_dir(job.store_url)
        options = dataclasses.replace(options, review_dir=review_dir)
    warnings: list[str] = []
    with PredictionClient(job.server, timeout_s=job.timeout_s) as client:
        if volume := volume_model(client, job.model, job.version, job.label):
            return predict_volume_job(client, job, volume, source)  # [-1, d, h, w, ch] input
        args = _model_args(job)
        args["signature"] = _signature(client, job, options)
        contract = served_contract(client, job.model, job.version, job.contract, job.model_base)
        if contract is not None and contract.expected_input:
            args["screen"] = input_screen(contract.expected_input, job.model, job.strict, warnings)
        guard = GuardCheck.of(contract, job.batch_size)  # None: the model has no guard
        if guard is not None:
            args["screen"] = guard.screen(args.get("screen"))
        if source is not None:
            outcome = _predict_studies(client, source, job, options, args)
        else:
            results, rejected = client.predict_dicom(job.paths, job.model, **args)
            results, report = _write_files(results, options)
            outcome = PredictOutcome(results, rejected, report=report)
        if guard is not None:
            _mark_in_distribution(outcome, guard, client, warnings)
    outcome.warnings = warnings
    if job.record:
        outcome.recorded = record(outcome.results, job.store_url, outcome.report.per_result)
    return outcome


def _mark_in_distribution(outcome: PredictOutcome, guard: GuardCheck, client, warnings) -> None:
    """Each result's ``ood_score`` and ``in_distribution`` (JSON) and the guard's table."""
    scores = guard.scores(client, outcome.results, warnings)
    outcome.report.per_result.update(guard.verdicts(scores))
    outcome.report.lines += guard.lines(outcome.results, scores)


def _signature(client, job: PredictJob, options: OutputOptions) -> str:
    """``explain`` (the outputs plus a heat map) when overlays or review records are asked
    for and the served model has that signature; else ``serving_default``."""
    if options.files.get("overlay_out") or job.record:
        defs = client.signature_defs(job.model, version=job.version, label=job.label)
        if EXPLAIN in defs:
            return EXPLAIN
    return "serving_default"


def _model_args(job: PredictJob) -> dict:
    return dict(
        version=job.version,
        label=job.label,
        contract=job.contract,
        batch_size=max(1, job.batch_size),
    )


def _write_files(results: list, options: OutputOptions) -> tuple[list, OutputReport]:
    if not results:
        return results, OutputReport()
    task = get_task(results[0].task)
    other = [k for k in options.files if k not in task.file_outputs]
    if other:
        flags = ", ".join("--" + k.replace("_", "-") for k in other)
        raise ConfigError(f"{flags}: not an output of a {task.name} model")
    return task.write_files(results, options)


def _predict_studies(
    client, source, job: PredictJob, options: OutputOptions, args: dict
) -> PredictOutcome:
    """Fetch the studies (WADO-RS), predict, write the task's files while the instances are
    in the local cache and, with ``push``, store the task's DICOM results (STOW-RS).

    A prediction's ``path`` is then ``<DICOMweb URL>/studies/<study>/series/<series>/
    instances/<sop>``; a rejected instance's is its cache file name.
    """
    with tempfile.TemporaryDirectory(prefix="medflow-dicomweb-") as tmp:
        cache = Path(tmp) / "instances"
        pull(source, Query(study_uids=tuple(job.study_uids)), cache)
        results, rejected = client.predict_dicom([cache], job.model, **args)
        results, report = _write_files(results, options)
        pushed = []
        if job.push and results:
            pushed = get_task(results[0].task).push(results, source, options.settings)
        results = [dataclasses.replace(r, path=_url(source.url, r)) for r in results]
        rejected = [dataclasses.replace(r, path=Path(r.path).name) for r in rejected]
    return PredictOutcome(results, rejected, pushed, report)


def _url(base: str, r) -> str:
    return (
        f"{base}/studies/{r.study_instance_uid}/series/{r.series_instance_uid}"
        f"/instances/{r.sop_instance_uid}"
    )


def default_mask_dir(store_url: str | None) -> str:
    """``masks/`` beside a SQLite review store's file, else ``.medflow/masks``."""
    url = store_url or store_url_from_env()
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        return str(Path(url[len("sqlite:///") :]).parent / "masks")
    return ".medflow/masks"


def record(results, store_url: str | None, per_result: dict | None = None) -> list[int]:
    """Write predictions into the dashboard's review store; returns their ids.

    What is recorded for each result (labels, scores, and e.g. a mask file's path as
    ``mask_ref``) is its task's :meth:`~medflow.core.tasks.Task.review_record`, with the
    guard's ``ood_score`` and ``in_distribution`` from ``per_result`` when the model has one.
    """
    extra = per_result or {}
    guard = [{k: extra[k][i] for k in GUARD_KEYS if k in extra} for i in range(len(results))]
    from medflow.dashboard.store import ReviewStore

    store = ReviewStore(store_url or store_url_from_env())
    try:
        return [
            store.record_prediction(
                sop_instance_uid=r.sop_instance_uid,
                study_instance_uid=r.study_instance_uid,
                series_instance_uid=r.series_instance_uid,
                image_ref=r.path,
                model_name=r.model_name,
                model_version=str(r.model_version),
                frame_index=r.frame_index,
                **get_task(r.task).review_record(r),
                **guard[i],
            )
            for i, r in enumerate(results)
        ]
    finally:
        store.close()
