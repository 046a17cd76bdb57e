"""Ingestion output is unchanged by the renovation (issue 16): the digest recorded before the
code moved (tests/golden/ingest_digest.json) is recomputed on the same 40+40 PneumoniaMNIST
images and compared record for record: counts, and per split the number of records and the
sha256 over their sorted digests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.golden.ingest_digest import ingest_digest

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "ingest_digest.json"


@pytest.fixture(scope="module")
def digest(shared_data, tmp_path_factory) -> dict:
    npz = shared_data / "pneumoniamnist_trainval.npz"
    if not npz.is_file():
        pytest.skip(f"{npz} not found")
    return ingest_digest(npz, tmp_path_factory.mktemp("golden"))


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads(GOLDEN.read_text())


def test_counts_match_the_recorded_digest(digest, golden):
    assert digest["counts"] == golden["counts"]


def test_each_split_matches_the_recorded_digest(digest, golden):
    assert sorted(digest["splits"]) == sorted(golden["splits"])
    for split, want in golden["splits"].items():
        got = digest["splits"][split]
        assert got["records"] == want["records"], split
        assert got["sha256"] == want["sha256"], (
            f"split {split}: the {want['records']} records differ from the recorded digest"
        )
