"""Is an input what the model was trained on? Each file's Modality, PhotometricInterpretation,
BodyPartExamined and model-input pixel spacing against its contract's ``expected_input``
(:func:`medflow.core.expected_input.input_mismatches`): a warning per file, or with ``strict`` the
file refused, before anything is sent to the server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from medflow.core.contract import CONTRACT_FILE, ModelContract
from medflow.core.errors import MedflowError
from medflow.core.expected_input import SPACING_KEY, input_mismatches
from medflow.pipelines.preflight import read_header
from medflow.serving.dicom_input import ModelInput, Rejected

REASON = "outside_training_data"
_TAGS = {"modality": "Modality", "photometric": "PhotometricInterpretation",
         "body_part": "BodyPartExamined"}  # fmt: skip


def served_contract(
    client, model: str, version: int | None, contract: str | None, model_base: str | None
) -> ModelContract | None:
    """``contract`` (a file or version folder) when given, else the served version's
    ``<model_base>/<model>/<version>/contract.json`` when that exists (None: none found)."""
    if contract:
        return ModelContract.load(contract)
    if not model_base:
        return None
    if version is None:
        try:
            available = [v for v, state in client.status(model) if state == "AVAILABLE"]
        except MedflowError:
            return None
        version = max(available) if available else None
    path = Path(model_base) / model / str(version) / CONTRACT_FILE
    if version is None or not path.is_file():
        return None
    try:
        return ModelContract.load(path)
    except MedflowError:
        return None  # not this model's business to fail on: --contract names one explicitly


def input_screen(
    expected: dict, model: str, strict: bool, warnings: list[str]
) -> Callable[[list[ModelInput]], tuple[list[ModelInput], list[Rejected]]]:
    """A screen for :meth:`PredictionClient.predict_dicom`: inputs outside ``expected``
    are refused (``strict``) or kept with one line per file appended to ``warnings``."""

    def screen(inputs: list[ModelInput]) -> tuple[list[ModelInput], list[Rejected]]:
        kept: list[ModelInput] = []
        refused: dict[str, Rejected] = {}
        said: set[str] = set()
        headers: dict[str, dict] = {}
        for item in inputs:
            if item.path not in headers:
                headers[item.path] = _header(item.path)
            spacing = item.geometry.pixel_spacing if item.geometry is not None else None
            problems = input_mismatches(expected, {**headers[item.path], SPACING_KEY: spacing})
            if not problems:
                kept.append(item)
                continue
            what = f"{item.path}: {'; '.join(problems)}: not what {model} was trained on"
            if strict:
                refused.setdefault(item.path, Rejected(item.path, REASON, f"{what} (--strict)"))
                continue
            kept.append(item)
            if item.path not in said:
                said.add(item.path)
                warnings.append(f"{what}; its result may be wrong (--strict refuses such files)")
        return kept, list(refused.values())

    return screen


def _header(path: str) -> dict:
    ds = read_header(path, tuple(_TAGS.values()))
    if ds is None:  # it was read once already; no header: nothing to check
        return {}
    return {key: str(ds.get(tag, "") or "") for key, tag in _TAGS.items()}
