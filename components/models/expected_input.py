"""What a model's training images were, for its contract's ``expected_input``: the header
values (modality, photometric interpretation, body part) of the train split and the range of
its model-input pixel spacing, read from StatisticsGen's statistics of the ingested examples
(:mod:`medflow.core.features`). ``medflow predict`` checks inputs against it
(:func:`medflow.core.expected_input.input_mismatches`)."""

from __future__ import annotations

from typing import Any

from medflow.core import features
from medflow.core.expected_input import EXPECTED_HEADER_KEYS, SPACING_KEY

# Contract key -> the tf.Example feature it is read from.
HEADER_FEATURES = {
    "modality": features.MODALITY,
    "photometric": features.PHOTOMETRIC,
    "body_part": features.BODY_PART,
}
assert tuple(HEADER_FEATURES) == EXPECTED_HEADER_KEYS


def from_statistics(statistics_uri: str, split: str = "train") -> dict[str, Any]:
    """``expected_input`` of an ExampleStatistics artifact's ``split`` (empty lists / None
    where the examples do not say: a header without the attribute is ``UNKNOWN``)."""
    import tensorflow_data_validation as tfdv

    stats = tfdv.load_stats_binary(f"{statistics_uri.rstrip('/')}/Split-{split}/FeatureStats.pb")
    return from_dataset_statistics(stats.datasets[0])


def from_dataset_statistics(dataset) -> dict[str, Any]:
    """:func:`from_statistics` of one ``DatasetFeatureStatistics`` proto."""
    by_name = {f.path.step[0]: f for f in dataset.features if f.path.step}
    out: dict[str, Any] = {}
    for key, name in HEADER_FEATURES.items():
        feature = by_name.get(name)
        values: set[str] = set()
        if feature is not None:
            string_stats = feature.string_stats
            values |= {b.label for b in string_stats.rank_histogram.buckets}
            values |= {v.value for v in string_stats.top_values}
        out[key] = sorted(v for v in values if v and v != features.UNKNOWN)
    spacing = by_name.get(features.PIXEL_SPACING)
    out[SPACING_KEY] = None
    if spacing is not None and spacing.num_stats.common_stats.num_non_missing:
        low, high = float(spacing.num_stats.min), float(spacing.num_stats.max)
        if 0 < low <= high:
            out[SPACING_KEY] = [low, high]
    return out
