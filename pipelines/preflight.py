"""Input checks before a local run starts any component: one line each, in seconds, instead
of a component failing minutes later (a Trainer's ``KeyError: 'label'``, a StatisticsGen
finding no files for an empty eval split).

The split check predicts what ingestion will do: the manifest's ``split`` column where it
has one, else the patient hash split (:func:`assign_split` of the pseudonymous patient key
under the run's de-identification key), reading only the headers, and stopping as soon as
every split the pipeline needs has a labelled file.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from medflow.components.ingest.engine import parse_splits
from medflow.components.ingest.manifest import MASK_COLUMN, LabelManifest, read_manifest
from medflow.core.errors import ConfigError, InputError
from medflow.pipelines.config import PipelineConfig

# The Trainer trains on "train"; the Evaluator (and the Trainer's eval_args) read "eval".
NEEDED_SPLITS = ("train", "eval")
_HEADER_TAGS = (
    "PatientID",
    "IssuerOfPatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
)


def check_inputs(config: PipelineConfig, deid_key_file: str = "") -> None:
    """Raise :class:`InputError` / :class:`ConfigError` (one line) when the run cannot work.

    Args:
        config: the resolved config (absolute local paths).
        deid_key_file: the run's de-identification key (predicts the patient hash split).
    """
    names = [name for name, _ in parse_splits(config.splits)]
    missing = [s for s in NEEDED_SPLITS if s not in names]
    if missing:
        raise ConfigError(
            f"--splits {config.splits}: the pipeline trains on 'train' and evaluates on 'eval'; "
            f"add {', '.join(repr(s) for s in missing)}, e.g. --splits train=80,eval=20"
        )
    if config.input_format == "tfrecord":
        _check_tfrecord_folders(Path(config.data_root))
        return
    if not config.label_manifest and not config.task_plugin.manifest_columns:
        return  # an unsupervised task without a manifest: every instance, split by patient
    manifest = _manifest(config)
    manifest.check_splits(names)
    if config.data_root.startswith(("http://", "https://")):
        return  # a PACS query: its instances are known once ingestion lists them
    in_manifest = {manifest.splits.get(key) for key in manifest.rows}
    if None not in in_manifest:  # every row names its split
        empty = [s for s in NEEDED_SPLITS if s not in in_manifest]
        if empty:
            raise InputError(
                f"label manifest {manifest.source}: no row in split {empty[0]!r} (its "
                f"'split' column), so that split would be empty; give some rows "
                f"split={empty[0]}, or drop the column to split patients by --splits"
            )
        return
    _check_hash_split(config, manifest, deid_key_file)


def _manifest(config: PipelineConfig) -> LabelManifest:
    task = config.task_plugin
    columns = ", ".join(task.manifest_columns)
    if not config.label_manifest:
        raise InputError(
            f"the {task.name} task trains on labels: pass --labels CSV with a key column "
            f"(SOPInstanceUID or path) and {columns} (see `medflow ingest -h`)"
        )
    manifest = read_manifest(config.label_manifest)
    have = set(manifest.label_columns) | ({MASK_COLUMN} if manifest.masks else set())
    lacking = [c for c in task.manifest_columns if c not in have]
    if lacking:
        raise InputError(
            f"label manifest {config.label_manifest}: no {', '.join(lacking)} column, which the "
            f"{task.name} task trains on (it has {', '.join(manifest.label_columns) or 'none'}); "
            f"add it, or pass the --task the manifest is for"
        )
    return manifest


def _check_hash_split(config: PipelineConfig, manifest: LabelManifest, key_file: str) -> None:
    """Which split the labelled files fall in, until each needed split has one."""
    from medflow.components.dicom.deid import derive_identity
    from medflow.components.dicom.keys import load_key_file
    from medflow.components.ingest.engine import assign_split

    splits = parse_splits(config.splits)
    key = load_key_file(key_file) if key_file else None
    root = Path(config.data_root)
    seen: set[str] = set()
    labelled = 0
    for path in _files(root):
        ds = read_header(path, _HEADER_TAGS)
        if ds is None:  # not DICOM: ingestion reports it
            continue
        row = manifest.lookup(
            str(ds.get("SOPInstanceUID", "")),
            str(ds.get("SeriesInstanceUID", "")),
            str(ds.get("StudyInstanceUID", "")),
            path.relative_to(root).as_posix(),
        )
        if row is None:
            continue
        labelled += 1
        split = manifest.splits.get(row)
        if split is None and key is not None:
            split = assign_split(derive_identity(ds, key).patient_key, splits)
        seen.add(split or "")
        if all(s in seen for s in NEEDED_SPLITS):
            return
    if not labelled:
        raise InputError(
            f"{root}: no DICOM file there matches a row of {manifest.source} (key "
            f"{manifest.key_column}); pass the folder the manifest describes"
        )
    empty = next(s for s in NEEDED_SPLITS if s not in seen)
    raise InputError(
        f"{root}: the {labelled} labelled file(s) all fall in {sorted(seen)} (patients split by "
        f"--splits {config.splits}), so split {empty!r} would be empty; add files of more "
        f"patients, or give the manifest a 'split' column"
    )


def read_header(path: str | Path, keywords: tuple[str, ...]):
    """The data set of ``keywords`` only (no pixels), quietly (pydicom's warnings about odd
    values are ingestion's to report), or None when ``path`` is not readable DICOM."""
    import pydicom

    log = logging.getLogger("pydicom")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(keywords))
    except Exception:  # noqa: BLE001 - any parser failure: not readable here
        return None
    finally:
        log.setLevel(level)


def _files(root: Path):
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and not name.lower().endswith(".csv"):
                yield Path(folder) / name


def _check_tfrecord_folders(root: Path) -> None:
    for split in NEEDED_SPLITS:
        folder = root / split
        if not folder.is_dir() or not any(p.is_file() for p in folder.iterdir()):
            raise InputError(
                f"{folder}: no TFRecord files; --format tfrecord needs {root}/train/ and "
                f"{root}/eval/ with files"
            )
