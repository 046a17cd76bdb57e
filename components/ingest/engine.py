"""Ingestion: a folder of DICOM files (+ optional label manifest) → de-identified
``tf.Example`` TFRecords split by patient, with every input accounted for.

Every input file ends in exactly one bucket: written, quarantined (reason code + message,
file copied under ``quarantine/<reason>/``) or duplicate (same SOPInstanceUID or same pixel
data as an earlier file in path order). A patient's files all go to one split: the hash of
its pseudonym, or the manifest's ``split`` column; a file the manifest puts in another split
than an earlier file of the same patient is quarantined as ``split_conflict``. Outputs are built in a staging folder and moved
into place whole; the report is written last.

The work runs as one Apache Beam pipeline (:mod:`.beam_pipeline`; the rules above in
:mod:`.plan`) on the runner ``IngestOptions.beam_args`` names (default: DirectRunner in this
process). The key goes to the workers as an owner-only temporary file, never as an option.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from medflow import __version__
from medflow.components.dicom.burned_in import tesseract
from medflow.components.dicom.deid import DeidKey
from medflow.components.dicom.reader import ReadLimits
from medflow.components.ingest.beam_pipeline import default_beam_args, run_pipeline
from medflow.components.ingest.beam_progress import PROGRESS_NAME, watching
from medflow.components.ingest.examples import WorkerConfig
from medflow.components.ingest.manifest import LabelManifest
from medflow.components.ingest.plan import QUARANTINE_DIR, Plan, assign_split  # noqa: F401 - re-exported
from medflow.core.errors import ConfigError, InputError
from medflow.core.files import atomic_write, swap_in_folders
from medflow.core.pixel_spec import PixelSpec

REPORT_NAME = "ingest_report.json"
_JSON_OPTIONS = orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE


@dataclass(frozen=True)
class IngestOptions:
    """How to ingest.

    Attributes:
        pixel: model-input preprocessing.
        splits: (name, weight) pairs; patients are assigned by a hash of their pseudonym.
        split_dir: folder name pattern of a split ("{split}"; TFX uses "Split-{split}").
        allow_burned_in: include US/SC/OT images whose BurnedInAnnotation is not NO.
        scan_burned_in: admit such images (BurnedInAnnotation absent, text-prone or no
            modality) when OCR finds no text in their pixels; YES is never admitted this way.
        quarantine_copy: copy quarantined files under quarantine/<reason>/ (else list only).
        workers: processes decoding files in parallel, per Beam worker (the worker pool).
        shard_size: examples per TFRecord file.
        limits: read limits (pixel cap, decompression limits).
        beam_args: Beam pipeline arguments (``--runner=...``); empty: Beam's DirectRunner
            in this process (``workers`` decoding processes).
    """

    pixel: PixelSpec = PixelSpec()
    splits: tuple[tuple[str, float], ...] = (("train", 0.8), ("eval", 0.2))
    split_dir: str = "{split}"
    allow_burned_in: bool = False
    scan_burned_in: bool = False
    quarantine_copy: bool = True
    workers: int = 1
    shard_size: int = 5000
    limits: ReadLimits = ReadLimits()
    beam_args: tuple[str, ...] = ()


def parse_splits(text: str) -> tuple[tuple[str, float], ...]:
    """ "train=80,eval=20" → (("train", 0.8), ("eval", 0.2))."""
    parts = []
    for item in text.split(","):
        name, _, weight = item.partition("=")
        try:
            parts.append((name.strip(), float(weight)))
        except ValueError:
            raise ConfigError(
                f"--splits {text!r}: expected name=weight pairs like train=80,eval=20"
            ) from None
    names = [n for n, _ in parts]
    if (
        not parts
        or any(not re.fullmatch(r"[a-z][a-z0-9_]*", n) for n in names)
        or len(set(names)) != len(names)
    ):
        raise ConfigError(f"--splits {text!r}: split names must be distinct lower-case words")
    total = sum(w for _, w in parts)
    if total <= 0 or any(w < 0 for _, w in parts):
        raise ConfigError(f"--splits {text!r}: weights must be non-negative and sum to more than 0")
    return tuple((n, w / total) for n, w in parts)


@dataclass
class IngestReport:
    """Counts and per-file outcomes; ``inputs == written + quarantined + duplicates``."""

    source: str
    options: dict
    files: list[dict] = field(default_factory=list)
    splits: dict[str, dict] = field(default_factory=dict)
    manifest: dict | None = None

    @property
    def counts(self) -> dict[str, int]:
        status = Counter(f["status"] for f in self.files)
        return {
            "inputs": len(self.files),
            "written": status["written"],
            "quarantined": status["quarantined"],
            "duplicates": status["duplicate"],
            "examples": sum(s["examples"] for s in self.splits.values()),
        }

    @property
    def quarantine_reasons(self) -> dict[str, int]:
        return dict(
            sorted(Counter(f["reason"] for f in self.files if f["status"] == "quarantined").items())
        )

    def to_dict(self) -> dict:
        return {
            "medflow_version": __version__,
            "source": self.source,
            "counts": self.counts,
            "splits": self.splits,
            "quarantine_reasons": self.quarantine_reasons,
            "manifest": self.manifest,
            "options": self.options,
            "files": self.files,
        }

    def table(self) -> str:
        """A plain-text summary for the terminal."""
        c = self.counts
        lines = [
            f"inputs {c['inputs']} = written {c['written']} + quarantined {c['quarantined']} "
            f"+ duplicates {c['duplicates']}   ({c['examples']} examples)",
            f"{'split':<10}{'examples':>10}{'patients':>10}{'labels':>30}",
        ]
        for name, s in self.splits.items():
            labels = ", ".join(f"{k}:{v}" for k, v in s.get("labels", {}).items())
            lines.append(f"{name:<10}{s['examples']:>10}{s['patients']:>10}{labels:>30}")
        for reason, n in self.quarantine_reasons.items():
            lines.append(f"quarantined {reason:<28}{n:>6}")
        if self.manifest and self.manifest.get("unmatched"):
            lines.append(f"manifest rows matching no input: {self.manifest['unmatched']}")
        return "\n".join(lines)


def list_inputs(source: Path, exclude: Path | None = None) -> list[tuple[str, str]]:
    """All files under ``source`` (or the file itself), sorted, as (path, relpath); links to
    files or folders are listed too (as inputs that are quarantined, never followed)."""
    if source.is_file():
        return [(str(source), source.name)]
    if not source.is_dir():
        raise InputError(f"input {source} is neither a file nor a folder")
    found = []
    top = str(source)
    for root, dirs, files in os.walk(top):  # does not follow directory symlinks (loops)
        if exclude is not None:
            dirs[:] = [d for d in dirs if Path(root, d).resolve() != exclude]
        dirs.sort()
        # strings, not Paths: this runs once per input file in the writing process
        prefix = "" if root == top else os.path.relpath(root, top).replace(os.sep, "/") + "/"
        sep = "" if root.endswith(os.sep) else os.sep
        # a linked folder is an input too (quarantined as a link), never skipped silently
        links = [d for d in dirs if os.path.islink(root + sep + d)]
        for name in sorted(files + links):
            found.append((root + sep + name, prefix + name))
    return found


def ingest(
    source: str | Path,
    out: str | Path,
    key: DeidKey,
    manifest: LabelManifest | None = None,
    options: IngestOptions = IngestOptions(),
    progress: object = None,
) -> IngestReport:
    """Ingest ``source`` into ``out`` with the Beam pipeline (:mod:`.beam_pipeline`); see
    the module docstring.

    Args:
        source: a DICOM file or a folder (searched recursively).
        out: output folder: ``<split>/data_tfrecord-*.gz``, ``quarantine/``, the report.
        key: de-identification key (pseudonyms, UID remapping, date shifts).
        manifest: labels; instances without a row are quarantined as ``unlabeled``.
        options: see :class:`IngestOptions` (``beam_args`` picks the runner).
        progress: wraps an iterator of one step per processed file, given the total
            (e.g. ``lambda it, n: tqdm(it, total=n)``); fed while the pipeline runs.
    """
    if hasattr(manifest, "pairs"):  # a registration pairs manifest: one example per pair
        from medflow.components.ingest.pairs import ingest_pairs  # imports this module

        return ingest_pairs(source, out, key, manifest, options)
    if Path(source, "volume_spec.json").is_file():  # volumes (medflow import-nifti wrote it)
        from medflow.components.ingest.volume_ingest import ingest_volumes  # imports this module

        return ingest_volumes(source, out, key, manifest, options)
    source, out = Path(source), Path(out)
    if options.scan_burned_in:
        tesseract()  # a missing OCR program is a setup error, not a reason per file
    if manifest is not None:
        manifest.check_splits([name for name, _ in options.splits])
    out.mkdir(parents=True, exist_ok=True)
    inputs = list_inputs(source, exclude=out.resolve())
    return ingest_inputs(inputs, str(source), out, key, manifest, options, progress=progress)


def ingest_inputs(
    inputs: list[tuple], source: str, out: Path, key, manifest, options, fetch=None, progress=None
) -> IngestReport:
    """Ingest listed ``inputs`` ((path, relpath[, reference]) in input order) into ``out``;
    ``fetch`` (a DoFn, e.g. :class:`.beam_dicomweb.FetchInstances`) first brings each
    input's file to its path inside the pipeline; ``progress`` as for :func:`ingest`."""
    # no key in the config: it travels as a file (see _write_key_file)
    burned_in = (options.allow_burned_in, options.scan_burned_in)
    cfg = WorkerConfig(None, options.pixel, options.limits, manifest, *burned_in)
    doc = _run_and_publish(inputs, cfg, key, source, out, options, manifest, (fetch, progress))
    report = IngestReport(
        doc["source"], doc["options"], doc["files"], doc["splits"], doc["manifest"]
    )
    c = report.counts
    assert c["inputs"] == c["written"] + c["quarantined"] + c["duplicates"] == len(inputs), c
    return report


def _run_and_publish(inputs, cfg, key, source: str, out, options, manifest, extra) -> dict:
    """Run the Beam pipeline into a staging folder beside ``out``, swap its folders in and
    write the report (atomically); returns the report document. ``extra``: (fetch,
    progress) of :func:`ingest_inputs`."""
    fetch, progress = extra
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out))
    secret_dir = Path(tempfile.mkdtemp(prefix="medflow-key-"))  # owner-only (0700)
    try:
        key_file = _write_key_file(secret_dir / "deid.key", key)
        finish = functools.partial(
            _finish_report,
            staging=str(staging),
            source=source,
            options=_options_dict(options),
            manifest=manifest,
        )
        beam_args = list(options.beam_args) or default_beam_args()
        counter = str(staging / PROGRESS_NAME)
        with watching(progress, len(inputs), counter):
            run_pipeline(
                inputs, cfg, str(key_file), staging, options, finish, beam_args, fetch, counter
            )
        Path(counter).unlink(missing_ok=True)
        doc = orjson.loads((staging / REPORT_NAME).read_bytes())
        (staging / REPORT_NAME).unlink()
        swap_in_folders(
            staging,
            out,
            [options.split_dir.format(split=s) for s, _ in options.splits] + [QUARANTINE_DIR],
        )
        write_json_atomic(out / REPORT_NAME, doc)
    finally:
        shutil.rmtree(secret_dir, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)
    return doc


def _write_key_file(path: Path, key: DeidKey) -> Path:
    """The key as an owner-only file the workers read in ``setup()`` (never an option)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.secret)
    return path


def _options_dict(options: IngestOptions) -> dict:
    return {
        "pixel": options.pixel.to_dict(),
        "splits": dict(options.splits),
        "allow_burned_in": options.allow_burned_in,
        "scan_burned_in": options.scan_burned_in,
        "max_pixels": options.limits.max_pixels,
    }


def _finish_report(
    plan: Plan,
    copies: dict,
    shards: list,
    *,
    staging: str,
    source: str,
    options: dict,
    manifest: LabelManifest | None,
) -> None:
    """The pipeline's last step: the report, into ``staging`` (``shards``, the written shard
    files, is only a dependency: the report comes after every shard)."""
    del shards
    for entry in plan.files:
        if "copy" in entry:
            entry["copy"] = copies.get(entry["path"], "")
    report = IngestReport(source, options, plan.files, plan.splits)
    report.manifest = _manifest_summary(manifest, report)
    write_json_atomic(Path(staging) / REPORT_NAME, report.to_dict())


def _manifest_summary(manifest: LabelManifest | None, report: IngestReport) -> dict | None:
    if manifest is None:
        return None
    matched = {f["manifest_key"] for f in report.files if f.get("manifest_key")}
    unmatched = sorted(set(manifest.rows) - matched)
    return {
        "source": manifest.source,
        "key_column": manifest.key_column,
        "label_columns": manifest.label_columns,
        "rows": len(manifest.rows),
        "matched": len(matched),
        "unmatched": len(unmatched),
        "unmatched_keys": unmatched[:20],
    }


def write_json_atomic(path: Path, payload: dict) -> None:
    """Write JSON to a temp file beside ``path``, then rename over it."""
    # orjson: a report lists every input file; json.dump took ~40 us a file
    atomic_write(path, orjson.dumps(payload, default=str, option=_JSON_OPTIONS))
