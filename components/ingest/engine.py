"""Ingestion: a folder of DICOM files (+ optional label manifest) → de-identified
``tf.Example`` TFRecords split by patient, with every input accounted for.

Every input file ends in exactly one bucket: written, quarantined (reason code + message,
file copied under ``quarantine/<reason>/``) or duplicate (same SOPInstanceUID or same pixel
data as an earlier file in path order). A patient's files all go to one split: the hash of
its pseudonym, or the manifest's ``split`` column; a file the manifest puts in another split
than an earlier file of the same patient is quarantined as ``split_conflict``. Outputs are built in a staging folder and moved
into place whole; the report is written last.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from medflow import __version__
from medflow.components.dicom.burned_in import tesseract
from medflow.components.dicom.deid import DeidKey
from medflow.components.dicom.reader import ReadLimits
from medflow.components.ingest.examples import (
    FileResult,
    WorkerConfig,
)
from medflow.components.ingest.manifest import LabelManifest
from medflow.components.ingest.split_writer import SplitWriter
from medflow.components.ingest.workers import run_workers
from medflow.core.errors import ConfigError, InputError
from medflow.core.files import atomic_write, swap_in_folders
from medflow.core.pixel_spec import PixelSpec

REPORT_NAME = "ingest_report.json"
_JSON_OPTIONS = orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE
QUARANTINE_DIR = "quarantine"


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
        workers: processes decoding files in parallel.
        shard_size: examples per TFRecord file.
        limits: read limits (pixel cap, decompression limits).
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


def assign_split(patient_key: str, splits: tuple[tuple[str, float], ...]) -> str:
    """Deterministic patient-level split: the same pseudonym always lands in the same split."""
    u = int.from_bytes(hashlib.sha256(patient_key.encode()).digest()[:8], "big") / 2**64
    acc = 0.0
    for name, weight in splits:
        acc += weight
        if u < acc:
            return name
    return splits[-1][0]


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
    progress: Callable[[Iterator, int], Iterator] | None = None,
) -> IngestReport:
    """Ingest ``source`` into ``out``; see the module docstring.

    Args:
        source: a DICOM file or a folder (searched recursively).
        out: output folder: ``<split>/data_tfrecord-*.gz``, ``quarantine/``, the report.
        key: de-identification key (pseudonyms, UID remapping, date shifts).
        manifest: labels; instances without a row are quarantined as ``unlabeled``.
        options: see :class:`IngestOptions`.
        progress: wraps the result iterator (e.g. ``lambda it, n: tqdm(it, total=n)``).
    """
    source, out = Path(source), Path(out)
    if options.scan_burned_in:
        tesseract()  # a missing OCR program is a setup error, not a reason per file
    if manifest is not None:
        manifest.check_splits([name for name, _ in options.splits])
    out.mkdir(parents=True, exist_ok=True)
    inputs = list_inputs(source, exclude=out.resolve())
    cfg = WorkerConfig(
        key,
        options.pixel,
        options.limits,
        manifest,
        options.allow_burned_in,
        options.scan_burned_in,
    )
    report = IngestReport(str(source), _options_dict(options))
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out))
    try:
        writer = SplitWriter(staging, options)
        results = run_workers(inputs, cfg, options.workers)
        if progress is not None:
            results = progress(results, len(inputs))
        _collect(results, inputs, writer, report, staging, options)
        report.splits = writer.close()
        report.manifest = _manifest_summary(manifest, report)
        swap_in_folders(
            staging,
            out,
            [options.split_dir.format(split=s) for s, _ in options.splits] + [QUARANTINE_DIR],
        )
        write_json_atomic(out / REPORT_NAME, report.to_dict())
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    c = report.counts
    assert c["inputs"] == c["written"] + c["quarantined"] + c["duplicates"], c
    return report


def _options_dict(options: IngestOptions) -> dict:
    return {
        "pixel": options.pixel.to_dict(),
        "splits": dict(options.splits),
        "allow_burned_in": options.allow_burned_in,
        "scan_burned_in": options.scan_burned_in,
        "max_pixels": options.limits.max_pixels,
    }


def _collect(results, inputs, writer, report, staging: Path, options: IngestOptions) -> None:
    seen_sop: dict[str, str] = {}
    seen_pixels: dict[str, str] = {}
    patient_split: dict[str, tuple[str, str]] = {}  # pseudonym -> (split, first relpath)
    abspaths = dict((rel, path) for path, rel in inputs)
    for res in results:
        entry = {"path": res.relpath}
        if res.status == "ok" and not _is_duplicate(res, seen_sop, seen_pixels, entry):
            split = res.split or assign_split(res.patient_key, options.splits)
            first_split, first_path = patient_split.setdefault(
                res.patient_key, (split, res.relpath)
            )
            if split != first_split:
                res.status, res.reason = "quarantined", "split_conflict"
                res.message = (
                    f"{res.relpath}: the manifest puts it in split {split!r} but its patient "
                    f"{res.patient_key} is already in {first_split!r} (first file {first_path}); "
                    "give all files of a patient the same split"
                )
        if res.status == "quarantined":
            entry.update(status="quarantined", reason=res.reason, message=res.message)
            if options.quarantine_copy:
                entry["copy"] = _quarantine_copy(abspaths[res.relpath], res, staging)
        elif "duplicate_of" not in entry:
            if res.sop_uid:
                seen_sop[res.sop_uid] = res.relpath
            seen_pixels[res.pixel_hash] = res.relpath
            writer.add(res, split)
            entry.update(
                status="written",
                split=split,
                examples=len(res.records),
                patient_id=res.patient_key,
            )
            if res.manifest_key is not None:
                entry["manifest_key"] = res.manifest_key
            if res.burned_in_check:
                entry["burned_in_check"] = res.burned_in_check
        report.files.append(entry)


def _is_duplicate(res: FileResult, seen_sop: dict, seen_pixels: dict, entry: dict) -> bool:
    first = (seen_sop.get(res.sop_uid) if res.sop_uid else None) or seen_pixels.get(res.pixel_hash)
    if first:
        entry.update(status="duplicate", duplicate_of=first)
    return bool(first)


def _quarantine_copy(path: str, res: FileResult, staging: Path) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", Path(res.relpath).name)[:80] or "file"
    digest = hashlib.sha1(res.relpath.encode()).hexdigest()[:10]
    rel = f"{QUARANTINE_DIR}/{res.reason}/{digest}_{safe}"
    if os.path.islink(path):  # a link's target may be anything (a key file): never copied
        return ""
    dest = staging / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copyfile(path, dest)
    except OSError:
        return ""
    return rel


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
