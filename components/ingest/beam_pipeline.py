"""Ingestion as one Apache Beam pipeline (used by ``medflow ingest`` and DicomExampleGen):

    inputs ─ Reshuffle ─ [fetch] ─ read/validate/de-identify/preprocess/encode (per file,
       │       through the crash-isolating worker pool of :mod:`.workers`)
       ├─ outcomes without records ─ PlanFn (one combine: duplicates, splits, places)
       ├─ records placed by the plan ─ GroupByKey (split, shard) ─ write each shard
       └─ plan ─ copy quarantined files ─ report (written last)

The fetch step is the DICOMweb source (:mod:`.beam_dicomweb`).

Everything is written into ``staging`` (a folder the caller moves into place whole), each
file as a temporary then renamed, so a retried bundle rewrites the same bytes. The
de-identification key reaches the workers as a key file read in ``setup``: never a
pipeline option (those are logged) and never part of the pickled graph.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import uuid
from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from medflow.components.dicom.keys import load_key_file
from medflow.components.ingest.beam_progress import Ticker
from medflow.components.ingest.examples import FileResult, WorkerConfig
from medflow.components.ingest.plan import Outcome, Plan, PlanFn, outcome
from medflow.components.ingest.workers import run_workers

Item = tuple[int, str, str]  # (input position, path, relpath)
# Records arrive framed and compressed by the workers (``tfrecord.gzip_record``): a shard is
# their bytes appended, no TensorFlow and no compression in the writing step.
SHARD_PATTERN = "data_tfrecord-{index:05d}-of-{count:05d}.gz"
FAILED = "failed"  # the tagged output of a fetch step: inputs it could not bring


def default_beam_args() -> list[str]:
    """The local default: Beam's DirectRunner in this process; the files are decoded by
    ``--workers`` processes of the worker pool (:func:`.workers.run_workers`)."""
    return ["--runner=DirectRunner", "--direct_running_mode=in_memory"]


def in_launching_process(beam_args: list[str]) -> bool:
    """Whether the runner runs the per-file step in this process (DirectRunner in-memory or
    multi-threaded, the bundle-based DirectRunner): a file that kills it fails the run.
    Elsewhere (DirectRunner multi-processing, Flink, Spark, Dataflow) the step decodes in
    child processes of the Beam worker even with one ``--workers``: a Beam worker process
    that dies fails DirectRunner multi-processing with "Channel closed prematurely" (Beam
    2.x; or hangs it when no data transfer is open, Beam issue #19674) and costs other
    runners a whole bundle's retries, then the job."""
    opts = PipelineOptions(beam_args)
    runner = opts.view_as(StandardOptions).runner or "DirectRunner"
    mode = opts.view_as(DirectOptions).direct_running_mode or "in_memory"
    if runner in ("BundleBasedDirectRunner", "SwitchingDirectRunner"):
        return True
    return runner == "DirectRunner" and mode in ("in_memory", "multi_threading")


class ProcessFiles(beam.DoFn):
    """Input files → (position, path, FileResult with its encoded records), through the
    worker pool unchanged (:func:`.workers.run_workers`: ``workers`` processes per Beam
    worker, a file that kills its process quarantined as ``worker_crashed``; 1: in the Beam
    worker itself, unless ``isolate``: then in one child process, see
    :func:`in_launching_process`). A bundle's files are collected, then run through one
    pool."""

    def __init__(self, cfg: WorkerConfig, key_file: str, workers: int, isolate: bool = False):
        self._cfg_without_key = dataclasses.replace(cfg, key=None)
        self._key_file = key_file
        self._workers = workers
        self._isolate = isolate
        self._cfg: WorkerConfig | None = None
        self._bundle: list[Item] = []

    def setup(self) -> None:
        self._cfg = dataclasses.replace(self._cfg_without_key, key=load_key_file(self._key_file))

    def start_bundle(self) -> None:
        self._bundle = []

    def process(self, item: Item):
        self._bundle.append(item)

    def finish_bundle(self):
        items, self._bundle = self._bundle, []
        inputs = [(path, rel) for _, path, rel in items]
        results = run_workers(inputs, self._cfg, self._workers, self._isolate)
        for (index, path, _), res in zip(items, results, strict=True):
            yield WindowedValue((index, path, res), MIN_TIMESTAMP, (GlobalWindow(),))


class ToOutcome(beam.DoFn):
    """(position, path, FileResult) → its :class:`Outcome`, counted for progress."""

    def __init__(self, ticker: Ticker):
        self._ticker = ticker

    def process(self, processed: tuple[int, str, FileResult]):
        self._ticker.tick()
        yield outcome(*processed)


def _place_records(processed: tuple[int, str, FileResult], plan: Plan, shard_size: int):
    res = processed[2]
    place = plan.placements.get(res.relpath)
    if place is None:
        return
    split, start = place
    for i, record in enumerate(res.records):
        yield (split, (start + i) // shard_size), (start + i, record)


class WriteShard(beam.DoFn):
    """(split, shard) + its (index, record) pairs → one GZIP TFRecord file, records in
    input order, written as a temporary then renamed (a retry rewrites the same bytes)."""

    def __init__(self, staging: str, split_dir: str):
        self._staging = staging
        self._split_dir = split_dir

    def process(self, group, plan: Plan):
        (split, shard), records = group
        count = plan.splits[split]["shards"]
        folder = Path(self._staging, self._split_dir.format(split=split))
        folder.mkdir(parents=True, exist_ok=True)
        dest = folder / SHARD_PATTERN.format(index=shard, count=count)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")
        with open(tmp, "wb") as fh:
            for _, record in sorted(records, key=lambda pair: pair[0]):
                fh.write(record)
        os.replace(tmp, dest)
        yield str(dest.relative_to(self._staging))


def _copy_quarantined(plan: Plan, staging: str):
    """Copies each quarantined file under quarantine/<reason>/; yields (relpath, copy or ""):
    a link is never followed (its target may be anything, a key file) and a file that
    cannot be read is listed without a copy."""
    for relpath, path, rel in plan.copies:
        if os.path.islink(path):
            yield relpath, ""
            continue
        dest = Path(staging, rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")
        try:
            shutil.copyfile(path, tmp)
            os.replace(tmp, dest)
        except OSError:
            tmp.unlink(missing_ok=True)
            yield relpath, ""
            continue
        yield relpath, rel


def run_pipeline(
    inputs: list[tuple[str, str]],
    cfg: WorkerConfig,
    key_file: str,
    staging: Path,
    options,
    finish,
    beam_args: list[str],
    fetch: beam.DoFn | None = None,
    progress_file: str | None = None,
) -> None:
    """Runs the ingestion pipeline over ``inputs`` ((path, relpath) in input order);
    ``finish(plan, copies, shards)`` runs once at the end, in a worker, and writes the
    report into ``staging``. With ``fetch`` the inputs are (path, relpath, reference) and
    ``fetch`` brings each file to its path first (main output: (position, path, relpath);
    ``FAILED`` output: (position, path, FileResult) of an input it could not bring).
    Each processed input appends a byte to ``progress_file`` (:mod:`.beam_progress`)."""
    items = [(i, *item) for i, item in enumerate(inputs)]
    for name, _ in options.splits:  # every split has its folder, even an empty one
        (staging / options.split_dir.format(split=name)).mkdir(parents=True, exist_ok=True)
    in_process = in_launching_process(beam_args)
    with beam.Pipeline(options=PipelineOptions(beam_args)) as p:
        listed = (
            p
            | "ListInputs" >> beam.Create(items, reshuffle=False)
            | "Reshuffle" >> beam.Reshuffle()
        )
        process = ProcessFiles(cfg, key_file, options.workers, not in_process)
        processed = _process(listed, process, fetch)
        plan = (
            processed
            | "Outcomes" >> beam.ParDo(ToOutcome(Ticker(progress_file)))
            | "Plan" >> beam.CombineGlobally(PlanFn(options))
        )
        plan_side = beam.pvalue.AsSingleton(plan)
        shards = (
            processed
            | "PlaceRecords" >> beam.FlatMap(_place_records, plan_side, options.shard_size)
            | "GroupShards" >> beam.GroupByKey()
            | "WriteShards" >> beam.ParDo(WriteShard(str(staging), options.split_dir), plan_side)
        )
        copies = plan | "CopyQuarantined" >> beam.FlatMap(_copy_quarantined, str(staging))
        _ = plan | "Report" >> beam.Map(
            finish, beam.pvalue.AsDict(copies), beam.pvalue.AsList(shards)
        )


def _process(listed, process: ProcessFiles, fetch: beam.DoFn | None):
    """(position, path, relpath[, reference]) → (position, path, FileResult), each input
    first brought to its path by ``fetch`` when given."""
    if fetch is None:
        return listed | "ProcessFiles" >> beam.ParDo(process)
    fetched = listed | "Fetch" >> beam.ParDo(fetch).with_outputs(FAILED, main="files")
    processed = fetched.files | "ProcessFiles" >> beam.ParDo(process)
    return (processed, fetched[FAILED]) | "WithFailed" >> beam.Flatten()


__all__ = ["Outcome", "ProcessFiles", "default_beam_args", "run_pipeline"]
