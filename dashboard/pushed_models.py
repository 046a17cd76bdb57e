"""Pushed model versions (TF Serving layout + ``contract.json``) and their TFMA results.

No Streamlit here. Layout, as the ContractPusher writes it (``components.pusher.publish``)::

    <models_dir>/<model_name>/<version>/saved_model.pb
    <models_dir>/<model_name>/<version>/contract.json

Contracts are read with :meth:`medflow.core.contract.ModelContract.load` (checked against the
schema, older schemas migrated); ``ModelVersion.contract`` is its current JSON form.

Staging folders (``.staging-*``) and other non-numeric names are not versions: TF Serving
ignores them too.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medflow.core.contract import CONTRACT_FILE, ModelContract
from medflow.core.errors import ConfigError


@dataclass(frozen=True)
class ModelVersion:
    """One pushed version; ``problem`` says why its contract is missing or unreadable.

    Attributes:
        contract: the contract's JSON form (current schema), None when unreadable.
        model_contract: the same, typed.
    """

    name: str
    version: int
    path: str
    has_saved_model: bool
    contract: dict[str, Any] | None
    problem: str = ""
    model_contract: ModelContract | None = None

    @property
    def overall_metrics(self) -> dict[str, float]:
        metrics = (self.contract or {}).get("metrics") or {}
        return {k: v for k, v in (metrics.get("eval") or {}).items() if _is_number(v)}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def listing_key(models_dir: str | Path) -> tuple:
    """Changes whenever a version folder or contract appears, goes or is rewritten.

    Used as the cache key of :func:`list_versions`; costs one ``stat`` per version.
    """
    base = Path(models_dir)
    if not base.is_dir():
        return ()
    key = []
    for model in sorted(os.scandir(base), key=lambda e: e.name):
        if not model.is_dir():
            continue
        for entry in sorted(os.scandir(model.path), key=lambda e: e.name):
            if entry.name.isdigit() and entry.is_dir():
                contract = Path(entry.path) / CONTRACT_FILE
                stamp = contract.stat().st_mtime_ns if contract.is_file() else 0
                key.append((model.name, entry.name, stamp))
    return tuple(key)


def list_versions(models_dir: str | Path) -> list[ModelVersion]:
    """Every pushed version, by model name, newest version first."""
    base = Path(models_dir)
    if not base.is_dir():
        return []
    out = []
    for model_dir in sorted(p for p in base.iterdir() if p.is_dir()):
        versions = sorted(
            (int(p.name) for p in model_dir.iterdir() if p.name.isdigit() and p.is_dir()),
            reverse=True,
        )
        for version in versions:
            out.append(read_version(model_dir / str(version)))
    return out


def read_version(folder: Path) -> ModelVersion:
    """One version folder; a broken contract is reported in ``problem``, not raised."""
    has_model = (folder / "saved_model.pb").is_file() or (folder / "saved_model.pbtxt").is_file()
    contract_path = folder / CONTRACT_FILE
    model_contract, problem = None, ""
    if not contract_path.is_file():
        problem = f"no {CONTRACT_FILE} in {folder}: it was not pushed by the medflow Pusher"
    else:
        try:
            model_contract = ModelContract.load(contract_path)
        except ConfigError as exc:
            problem = str(exc)
    if not has_model and not problem:
        problem = f"no saved_model.pb in {folder}: TF Serving cannot load this version"
    return ModelVersion(
        name=folder.parent.name,
        version=int(folder.name),
        path=str(folder),
        has_saved_model=has_model,
        contract=model_contract.to_dict() if model_contract else None,
        problem=problem,
        model_contract=model_contract,
    )


def contract_evaluation_uri(contract: dict[str, Any] | None) -> str | None:
    """The ModelEvaluation URI when the contract records one (else ask ML Metadata)."""
    contract = contract or {}
    for value in (contract.get("evaluation_uri"), (contract.get("evaluation") or {}).get("uri")):
        if isinstance(value, str) and value:
            return value
    return None


# --- TFMA plots -> chart points ---------------------------------------------------------


def _num(value: Any) -> float:
    # TFMA's JSON leaves zero fields out and writes NaN/Infinity as strings.
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def roc_points(matrices: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """(false positive rate, true positive rate) per threshold of ``confusionMatrixAtThresholds``.

    Anchored at (0, 0) and (1, 1): TFMA's highest threshold (1.0) still counts predictions
    of exactly 1.0 as positive, so its own points need not reach the origin.
    """
    points = [(0.0, 0.0), (1.0, 1.0)]
    for m in matrices:
        tp, fp = _num(m.get("truePositives")), _num(m.get("falsePositives"))
        tn, fn = _num(m.get("trueNegatives")), _num(m.get("falseNegatives"))
        if tp + fn == 0 or fp + tn == 0:
            continue
        points.append((fp / (fp + tn), tp / (tp + fn)))
    return sorted(set(points))


def calibration_points(buckets: list[dict[str, Any]], bins: int = 10) -> list[dict[str, float]]:
    """Mean prediction vs observed positive rate, in ``bins`` equal bins over [0, 1].

    TFMA's ``calibrationHistogramBuckets`` has ~10,000 fine buckets; they are merged so the
    plot shows a readable reliability curve. Empty bins are left out.
    """
    sums = [[0.0, 0.0, 0.0] for _ in range(bins)]  # examples, label, prediction
    for b in buckets:
        n = _num(b.get("numWeightedExamples"))
        if n <= 0:
            continue
        mean_pred = _num(b.get("totalWeightedRefinedPrediction")) / n
        i = min(max(int(mean_pred * bins), 0), bins - 1) if math.isfinite(mean_pred) else 0
        sums[i][0] += n
        sums[i][1] += _num(b.get("totalWeightedLabel"))
        sums[i][2] += _num(b.get("totalWeightedRefinedPrediction"))
    return [
        {"mean_prediction": p / n, "observed_rate": lab / n, "examples": n}
        for n, lab, p in sums
        if n > 0
    ]


def slice_name(slice_key) -> str:
    """``overall`` or ``modality=CR,sex=F``: the names ``load_metrics`` uses for slices."""
    if not slice_key:
        return "overall"
    return ",".join(f"{k}={v.decode() if isinstance(v, bytes) else v}" for k, v in slice_key)


@dataclass(frozen=True)
class Evaluation:
    """TFMA results of one ModelEvaluation artifact, as plain data for charts."""

    uri: str
    metrics: dict[str, dict[str, float]]  # slice -> metric -> value
    roc: dict[str, list[tuple[float, float]]]  # slice -> points
    calibration: dict[str, list[dict[str, float]]]  # slice -> points


def load_evaluation(uri: str) -> Evaluation:
    """Metrics per slice (``components.evaluation_results.load_metrics``) and plot points.

    Imports TensorFlow Model Analysis (slow, seconds): call it cached.
    """
    import tensorflow_model_analysis as tfma

    from medflow.components.evaluation_results import load_metrics

    metrics = load_metrics(uri)
    roc, calibration = {}, {}
    try:
        plots = tfma.load_eval_result(uri).plots or []
    except Exception:  # noqa: BLE001 - an evaluation without plots still has metrics
        plots = []
    for slice_key, by_output in plots:
        data = (by_output.get("") or {}).get("") or {}
        name = slice_name(slice_key)
        matrices = (data.get("confusionMatrixAtThresholds") or {}).get("matrices")
        if matrices:
            roc[name] = roc_points(matrices)
        buckets = (data.get("calibrationHistogramBuckets") or {}).get("buckets")
        if buckets:
            calibration[name] = calibration_points(buckets)
    return Evaluation(uri=uri, metrics=metrics, roc=roc, calibration=calibration)
