"""The contract's ``expected_input`` comes from the training split's statistics (issue 24,
item 9): header values seen (UNKNOWN left out) and the model-input pixel spacing range."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from medflow.components.models.expected_input import from_dataset_statistics, from_statistics
from medflow.core.contract import ModelContract


@pytest.fixture(scope="module")
def statistics(tmp_path_factory):
    """A StatisticsGen-style artifact folder whose train split TFDV computed."""
    import tensorflow_data_validation as tfdv

    frame = pd.DataFrame(
        {
            "modality": ["DX", "CR", "DX", "UNKNOWN"],
            "photometric": ["MONOCHROME2"] * 3 + ["MONOCHROME1"],
            "body_part": ["UNKNOWN"] * 4,
            "pixel_spacing": [0.5, 0.7, 0.6, 0.55],
            "img_min": [0.0] * 4,
            "img_max": [255.0] * 4,
        }
    )
    stats = tfdv.generate_statistics_from_dataframe(frame)
    uri = tmp_path_factory.mktemp("statistics")
    (uri / "Split-train").mkdir()
    (uri / "Split-train" / "FeatureStats.pb").write_bytes(stats.SerializeToString())
    return uri, stats


def test_values_and_spacing_range_of_the_train_split(statistics):
    uri, stats = statistics
    expected = from_statistics(str(uri))
    assert expected == {
        "modality": ["CR", "DX"],
        "photometric": ["MONOCHROME1", "MONOCHROME2"],
        "body_part": [],  # every image UNKNOWN: nothing to check
        "pixel_spacing_mm": [0.5, 0.7],
    }
    assert from_dataset_statistics(stats.datasets[0]) == expected


def test_pushed_contract_carries_it(statistics, tmp_path):
    from medflow.components.pusher import executor

    uri, _ = statistics
    static = {"task": "classification", "labels": ["a", "b"], "intended_use": "test",
              "pixel_spec": {"size": [28, 28], "channels": 1}}  # fmt: skip
    contract = executor.build_contract(static, str(tmp_path), "m", None, str(uri))
    assert contract.expected_input["modality"] == ["CR", "DX"]
    path = contract.write(tmp_path / "contract.json")
    assert json.loads(path.read_text())["expected_input"]["pixel_spacing_mm"] == [0.5, 0.7]
    assert ModelContract.load(path).expected_input == contract.expected_input


def test_schema_refuses_a_bad_expected_input():
    from medflow.core.errors import ConfigError

    contract = ModelContract(task="classification", expected_input={"pixel_spacing_mm": [0, 1]})
    with pytest.raises(ConfigError, match="expected_input"):
        contract.validate()
