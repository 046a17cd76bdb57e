"""Deciding what becomes of every processed file: duplicate, split conflict, or written at a
place (split, first record's index) — the same rules for every runner.

The decision is a pure function of the files' outcomes without their records (a few hundred
bytes each), taken in input order: the first file in path order wins a duplicate SOP
Instance UID or pixel hash, and the first written file of a patient fixes the patient's
split. It runs as one combine (``PlanFn``), so its answer does not depend on how the
runner cut the work into bundles or in which order bundles finished.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import apache_beam as beam

from medflow.components.ingest.examples import FileResult

if TYPE_CHECKING:
    from medflow.components.ingest.engine import IngestOptions

QUARANTINE_DIR = "quarantine"


@dataclass(frozen=True)
class Outcome:
    """A processed file without its records: what the plan needs."""

    index: int  # position in input order
    path: str
    result: FileResult  # records dropped; ``record_labels`` keeps one entry per record


def outcome(index: int, path: str, res: FileResult) -> Outcome:
    return Outcome(index, path, dataclasses.replace(res, records=[], examples=[]))


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
class Plan:
    """The report's per-file entries (input order), where each written file's records go,
    the quarantined files to copy, and the per-split summary."""

    files: list[dict] = field(default_factory=list)
    placements: dict[str, tuple[str, int]] = field(default_factory=dict)  # relpath -> place
    copies: list[tuple[str, str, str]] = field(default_factory=list)  # (relpath, path, dest)
    splits: dict[str, dict] = field(default_factory=dict)


def decide(outcomes: list[Outcome], options: IngestOptions) -> Plan:
    """The plan for ``outcomes`` (any order; sorted here by input position)."""
    plan = Plan()
    seen_sop: dict[str, str] = {}
    seen_pixels: dict[str, str] = {}
    patient_split: dict[str, tuple[str, str]] = {}  # pseudonym -> (split, first relpath)
    state = {
        name: {"examples": 0, "patients": set(), "labels": Counter()} for name, _ in options.splits
    }
    for item in sorted(outcomes, key=lambda o: o.index):
        res = item.result
        entry: dict = {"path": res.relpath}
        split = ""
        if res.status == "ok" and not _is_duplicate(res, seen_sop, seen_pixels, entry):
            split = res.split or assign_split(res.patient_key, options.splits)
            first_split, first_path = patient_split.setdefault(
                res.patient_key, (split, res.relpath)
            )
            if split != first_split:
                res = _split_conflict(res, split, first_split, first_path)
        if res.status == "quarantined":
            entry.update(status="quarantined", reason=res.reason, message=res.message)
            if options.quarantine_copy:
                entry["copy"] = quarantine_name(res)
                plan.copies.append((res.relpath, item.path, entry["copy"]))
        elif "duplicate_of" not in entry:
            if res.sop_uid:
                seen_sop[res.sop_uid] = res.relpath
            seen_pixels[res.pixel_hash] = res.relpath
            _place(plan, state[split], split, res)
            entry.update(
                status="written",
                split=split,
                examples=len(res.record_labels),
                patient_id=res.patient_key,
            )
            if res.manifest_key is not None:
                entry["manifest_key"] = res.manifest_key
            if res.burned_in_check:
                entry["burned_in_check"] = res.burned_in_check
        plan.files.append(entry)
    plan.splits = {
        name: {
            "examples": s["examples"],
            "patients": len(s["patients"]),
            "labels": dict(sorted(s["labels"].items())),
            "shards": -(-s["examples"] // options.shard_size),
        }
        for name, s in state.items()
    }
    return plan


def _place(plan: Plan, state: dict, split: str, res: FileResult) -> None:
    plan.placements[res.relpath] = (split, state["examples"])
    state["examples"] += len(res.record_labels)
    state["labels"].update(label for label in res.record_labels if label is not None)
    state["patients"].add(res.patient_key)


def _split_conflict(res: FileResult, split: str, first_split: str, first_path: str) -> FileResult:
    return dataclasses.replace(
        res,
        status="quarantined",
        reason="split_conflict",
        message=(
            f"{res.relpath}: the manifest puts it in split {split!r} but its patient "
            f"{res.patient_key} is already in {first_split!r} (first file {first_path}); "
            "give all files of a patient the same split"
        ),
    )


def _is_duplicate(res: FileResult, seen_sop: dict, seen_pixels: dict, entry: dict) -> bool:
    first = (seen_sop.get(res.sop_uid) if res.sop_uid else None) or seen_pixels.get(res.pixel_hash)
    if first:
        entry.update(status="duplicate", duplicate_of=first)
    return bool(first)


def quarantine_name(res: FileResult) -> str:
    """Where a quarantined file's copy goes, relative to the output folder."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", Path(res.relpath).name)[:80] or "file"
    digest = hashlib.sha1(res.relpath.encode()).hexdigest()[:10]
    return f"{QUARANTINE_DIR}/{res.reason}/{digest}_{safe}"


class PlanFn(beam.CombineFn):
    """All outcomes → one :class:`Plan` (accumulators are lists of small outcomes)."""

    def __init__(self, options: IngestOptions):
        self._options = options

    def create_accumulator(self) -> list:
        return []

    def add_input(self, acc: list, item: Outcome) -> list:
        acc.append(item)
        return acc

    def merge_accumulators(self, accs) -> list:
        return [item for acc in accs for item in acc]

    def extract_output(self, acc: list) -> Plan:
        return decide(acc, self._options)
