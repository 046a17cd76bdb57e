"""Predicting with a volume model (a served ``image`` input [-1, slices, rows, cols, ch]):
NIfTI files or DICOM series folders in, one label map per volume out.

Each input volume is normalised and centred on the model's grid as ingestion does
(:func:`components.ingest.volume_spec.prepare`, at the volume's own spacing), predicted
(the sliding window runs in the served graph), and the most probable class per voxel is
mapped back onto the source grid. ``--nifti-out DIR`` writes ``DIR/<input name>.nii.gz``
with the source affine; ``--seg-out DIR`` writes one multi-frame DICOM SEG per source
series (``seg-<SeriesInstanceUID>.dcm``), referencing every source instance, its frames on
the source slices. The task is the one whose outputs the signature has; nothing here
names one.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medflow.core.errors import InputError
from medflow.core.tasks import all_tasks


@dataclass
class VolumePrediction:
    """One predicted volume: foreground voxels and mL per label, and the files written."""

    path: str
    task: str
    labels: list[str]
    voxels: list[int]
    volume_ml: list[float]
    model_name: str
    model_version: int
    series_instance_uid: str = ""
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class SourceVolume:
    """A volume to predict: voxels, LPS affine, and the DICOM series it came from, if any."""

    name: str
    path: str
    voxels: np.ndarray
    affine: np.ndarray
    series: object = None  # components.dicom.volume.SeriesVolume


def volume_model(client, model: str, version=None, label=None):
    """(grid [slices, rows, cols], task, n_classes, per_voxel) of a served volume model,
    else None; ``per_voxel``: the task's output is a map on the grid (else one answer per
    volume, e.g. class probabilities)."""
    sig = client.signature_defs(model, version=version, label=label).get("serving_default")
    if sig is None or "image" not in sig.inputs:
        return None
    dims = [d.size for d in sig.inputs["image"].tensor_shape.dim]
    if len(dims) != 5:
        return None
    shapes = {k: [d.size for d in v.tensor_shape.dim] for k, v in sig.outputs.items()}
    for task in all_tasks():
        out = shapes.get(getattr(task, "signature_output", "probabilities"))
        n = None if out is None else task.classes_from_signature(dims, out)
        if n is not None:
            return dims[1:4], task, n, len(out) == 5
    raise InputError(f"model {model}: a volume input {dims} but outputs {shapes} of no task")


def read_volumes(paths) -> tuple[list[SourceVolume], list[tuple[str, str]]]:
    """NIfTI files and DICOM series (folders) under ``paths``; (volumes, rejected)."""
    from medflow.components.dicom.volume import assemble_folder
    from medflow.components.ingest.nifti import is_nifti, load_nifti, stem

    volumes, rejected, dicom = [], [], []
    for p in map(Path, paths):
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        for f in files:
            if not is_nifti(f.name):
                dicom.append(f)
                continue
            try:
                vol = load_nifti(f)
            except InputError as exc:
                rejected.append((str(f), str(exc)))
                continue
            volumes.append(SourceVolume(stem(f.name), str(f), vol.voxels, vol.affine))
    if dicom:
        result = assemble_folder(dicom)
        rejected += [(uid, msg) for uid, _, msg in result.rejected]
        for v in result.volumes:
            first = Path(v.source_files[0])
            if len(v.source_files) == 1:  # an Enhanced multi-frame file: named by itself
                volumes.append(SourceVolume(first.stem, str(first), v.voxels, v.affine, v))
                continue
            name = first.parent.name or v.series_uid
            volumes.append(SourceVolume(name, str(first.parent), v.voxels, v.affine, v))
    return volumes, rejected


def training_spec(contract, grid, model: str):
    """The VolumeSpec the model was trained with (its contract's ``volume_spec``), or None
    for a contract from before it was recorded (then each volume keeps its own spacing)."""
    from medflow.components.ingest.volume_spec import VolumeSpec
    from medflow.core.errors import ConfigError

    if contract is None or not contract.volume_spec:
        return None
    spec = VolumeSpec.from_json(json.dumps(dict(contract.volume_spec)))
    if list(spec.size) != [int(v) for v in grid]:
        raise ConfigError(
            f"model {model}: its contract's volume_spec grid {list(spec.size)} differs from "
            f"the served input grid {list(grid)}; publish the model with the contract its "
            "Trainer wrote"
        )
    return spec


def on_model_grid(volume: SourceVolume, grid, spec=None):
    """``volume`` prepared as ingestion prepared the training volumes: resampled to the
    training spacing, normalised the same way and centred on the grid (``spec`` None: at
    its own spacing). A volume that, at that spacing, does not fit the grid is refused:
    cropping it would cut anatomy the model never saw cut."""
    from medflow.components.ingest.volume_spec import VolumeSpec, prepare

    spacing = tuple(float(s) for s in np.linalg.norm(volume.affine[:3, :3], axis=0))
    prepared = prepare(volume.voxels, volume.affine, spec or VolumeSpec(spacing, tuple(grid)))
    if spec is not None and any(
        n > s for n, s in zip(prepared.resampled_shape, spec.size, strict=True)
    ):
        shape = "x".join(map(str, prepared.resampled_shape))
        raise InputError(
            f"{volume.path}: {shape} voxels at the training spacing {list(spec.spacing)} mm "
            f"do not fit the model grid {'x'.join(map(str, spec.size))}; crop the volume "
            "around the target first"
        )
    return prepared


def _ask(client, job, target, volume: SourceVolume, output_filter=()):
    """``volume`` on the model grid (``target``: (grid, training spec or None)) and the
    model's answer."""
    prepared = on_model_grid(volume, *target)
    pred = client.predict(
        job.model,
        {"image": prepared.image[None, ..., None].astype(np.float32)},
        version=job.version,
        label=job.label,
        output_filter=output_filter,
    )
    return prepared, pred


def predict_volume(client, job, target, volume: SourceVolume) -> tuple[np.ndarray, object]:
    """The label map of ``volume`` on its own grid, and the Prediction."""
    from medflow.components.ingest.volume_spec import restore

    prepared, pred = _ask(client, job, target, volume, ("mask",))
    grid_labels = np.asarray(pred.outputs["mask"])[0].astype(np.uint8)
    back = restore(
        grid_labels,
        prepared.offset,
        prepared.resampled_shape,
        prepared.source_shape,
        prepared.orientation,
    )
    return back, pred


@dataclass(frozen=True)
class _Item:
    """What a task's ``decode`` reads of one input: the volume as one item, frame 0."""

    path: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    frame_index: int = 0


def _each(job, ask, rejected: list):
    """(volume, ``ask(volume)``) for every volume of ``job.paths``; what cannot be read or
    is refused goes to ``rejected`` as (path, message)."""
    volumes, unread = read_volumes(job.paths)
    rejected += unread
    for vol in volumes:
        try:
            answer = ask(vol)
        except InputError as exc:
            rejected.append((vol.path, str(exc)))
            continue
        yield vol, answer


def run_per_volume(client, job, target, task, labels: list[str]):
    """One task result per volume (the task decodes the answer as for a 2D image)."""
    from medflow.serving.client import ModelInfo, named_classes

    info = ModelInfo(spec=None, labels=labels, task=task.name)
    results, rejected = [], []
    for vol, (_, pred) in _each(job, lambda v: _ask(client, job, target, v), rejected):
        series = vol.series
        item = _Item(
            vol.path,
            series.sop_instance_uids[0] if series is not None and vol.path.endswith(".dcm") else "",
            getattr(series, "study_uid", ""),
            getattr(series, "series_uid", ""),
        )
        results += task.decode([item], pred, named_classes(info, pred))
    return results, rejected, []


def run_volume_predict(client, job, target, task, n_classes: int, per_voxel=True, labels=None):
    """Predict every volume of ``job.paths`` (``target``: (grid, training spec or None));
    returns (results, rejected, report lines)."""
    labels = list(labels or task.default_labels(n_classes))
    if not per_voxel:
        return run_per_volume(client, job, target, task, labels)
    results, lines, rejected = [], [], []
    for vol, (label_map, pred) in _each(
        job, lambda v: predict_volume(client, job, target, v), rejected
    ):
        voxel_ml = float(np.prod(np.linalg.norm(vol.affine[:3, :3], axis=0))) / 1000.0
        counts = [int((label_map == c).sum()) for c in range(1, n_classes)]
        result = VolumePrediction(
            path=vol.path,
            task=task.name,
            labels=labels,
            voxels=counts,
            volume_ml=[round(c * voxel_ml, 3) for c in counts],
            model_name=pred.model_name,
            model_version=int(pred.model_version),
            series_instance_uid=getattr(vol.series, "series_uid", ""),
        )
        result.files = write_outputs(job.outputs.files, vol, label_map, result)
        lines += [f"wrote {f}" for f in result.files]
        results.append(result)
    return results, rejected, lines


def write_outputs(files: dict, vol: SourceVolume, label_map: np.ndarray, result) -> list[str]:
    """``nifti_out`` and ``seg_out`` files of one volume (atomic writes)."""
    from medflow.components.ingest.nifti import save_nifti

    written = []
    if files.get("nifti_out"):
        out = Path(files["nifti_out"])
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{vol.name}.nii.gz"
        save_nifti(path, label_map.astype(np.uint8), vol.affine)
        written.append(str(path))
    if files.get("seg_out") and vol.series is not None:
        from medflow.components.dicom.volume_seg import write_series_seg

        written.append(write_series_seg(Path(files["seg_out"]), vol.series, label_map, result))
    return written


def predict_volume_job(client, job, volume, source=None):
    """``medflow predict`` on a volume model (``volume`` from :func:`volume_model`): files
    and folders, or with ``source`` (a DICOMweb source) the studies of ``job.study_uids``,
    whose SEGs ``--push`` stores back (:mod:`.volume_studies`)."""
    from medflow.core.errors import ConfigError

    if job.record:
        raise ConfigError(
            "a volume model: --record is not supported yet; review volume masks on the "
            "dashboard's Volumes page (predict --nifti-out into its masks/ folder)"
        )
    grid, task, n_classes, per_voxel = volume
    if job.push and not per_voxel:
        raise ConfigError(f"--push: a {task.name} volume model has no DICOM result to store yet")
    if source is None:
        return _predict_volume_files(client, job, volume)
    from medflow.workflows.volume_studies import predict_studies

    outcome, pushed = predict_studies(
        client, job, source, lambda j: _predict_volume_files(client, j, volume)
    )
    outcome.pushed = pushed
    outcome.report.lines += [p.describe() for p in pushed]
    return outcome


def _predict_volume_files(client, job, volume):
    from medflow.core.tasks import OutputReport
    from medflow.serving.dicom_input import Rejected
    from medflow.workflows.input_check import served_contract
    from medflow.workflows.predict import PredictOutcome

    contract = served_contract(client, job.model, job.version, job.contract, job.model_base)
    labels = contract.labels if contract is not None else None
    grid, task, n_classes, per_voxel = volume
    target = (grid, training_spec(contract, grid, job.model))
    results, rejected, lines = run_volume_predict(
        client, job, target, task, n_classes, per_voxel, labels=labels
    )
    rejects = [Rejected(path, "volume_rejected", message) for path, message in rejected]
    return PredictOutcome(results, rejects, report=OutputReport(lines=lines))
