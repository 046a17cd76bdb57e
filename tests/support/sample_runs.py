"""A synthetic pipeline run in ML Metadata and a pushed model folder, for tests, demos, benchmarks.

Written with the real ``ml_metadata`` API the way TFX's local orchestrator records a run:
``pipeline`` / ``pipeline_run`` / ``node`` contexts, one execution per component, OUTPUT
and INPUT events keyed by channel name, artifacts with their files on disk.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from medflow.dashboard.lineage import INGEST_REPORT_TYPE

PIPELINE = "medflow-classification"
MODEL = "medflow-classifier"
QUARANTINE = {"not_dicom": 2, "no_pixel_data": 1}
EVAL_METRICS = {"auc": 0.91, "binary_accuracy": 0.86, "precision": 0.84, "recall": 0.8}


def _set(node, values: dict[str, Any], typed: tuple[str, ...] = ()) -> None:
    for key, value in values.items():
        prop = (node.properties if key in typed else node.custom_properties)[key]
        if isinstance(value, bool | int):
            prop.int_value = int(value)
        elif isinstance(value, float):
            prop.double_value = value
        else:
            prop.string_value = str(value)


def _writable_store(path: Path):
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2 as mlmd

    path.parent.mkdir(parents=True, exist_ok=True)
    config = mlmd.ConnectionConfig()
    config.sqlite.filename_uri = str(path)
    config.sqlite.connection_mode = mlmd.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
    return metadata_store.MetadataStore(config)


def _anomalies(uri: Path) -> None:
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    diff = anomalies_pb2.Anomalies()
    info = diff.anomaly_info["img_max"]
    info.severity = anomalies_pb2.AnomalyInfo.ERROR
    info.short_description = "Out-of-range values"
    info.description = "Unexpectedly large value: 70000 (max 65535)."
    (uri / "Split-eval").mkdir(parents=True, exist_ok=True)
    (uri / "Split-eval" / "SchemaDiff.pb").write_bytes(diff.SerializeToString())
    (uri / "Split-train").mkdir(parents=True, exist_ok=True)
    (uri / "Split-train" / "SchemaDiff.pb").write_bytes(
        anomalies_pb2.Anomalies().SerializeToString()
    )


def _ingest_report(uri: Path, counts: dict[str, int]) -> None:
    uri.mkdir(parents=True, exist_ok=True)
    files = [
        {"path": f"bad/{reason}_{i}.dcm", "status": "quarantined", "reason": reason,
         "message": f"bad/{reason}_{i}.dcm: {reason.replace('_', ' ')}"}
        for reason, n in QUARANTINE.items() for i in range(n)
    ]  # fmt: skip
    report = {
        "counts": counts,
        "quarantine_reasons": QUARANTINE,
        "splits": {
            "train": {"examples": 16, "patients": 8},
            "eval": {"examples": 4, "patients": 2},
        },
        "files": files + [{"path": "ok.dcm", "status": "written"}],
    }
    (uri / "ingest_report.json").write_text(json.dumps(report), encoding="utf-8")


class _RunRecorder:
    """Records component executions of one run the way TFX's launcher publishes them."""

    def __init__(self, store, pipeline: str, run_id: str, artifact_root: Path):
        from ml_metadata.proto import metadata_store_pb2 as mlmd

        self.mlmd, self.store, self.pipeline = mlmd, store, pipeline
        self.root = artifact_root / run_id.replace(":", "")
        self.ctype = {
            n: store.put_context_type(mlmd.ContextType(name=n))
            for n in ("pipeline", "pipeline_run", "node")
        }
        self.pipeline_ctx = self.context("pipeline", pipeline)
        self.run_ctx = self.context("pipeline_run", run_id)
        store.put_parent_contexts(
            [mlmd.ParentContext(parent_id=self.pipeline_ctx, child_id=self.run_ctx)]
        )
        self.made: dict[str, dict] = {}  # node id -> output key -> Artifact
        self.ids: dict[str, int] = {}  # node id -> execution id

    def context(self, kind: str, name: str) -> int:
        found = self.store.get_context_by_type_and_name(kind, name)
        if found is not None:
            return found.id
        return self.store.put_contexts([self.mlmd.Context(type_id=self.ctype[kind], name=name)])[0]

    def _event(self, kind, key: str):
        event = self.mlmd.Event(type=kind)
        event.path.steps.add().key = key
        event.path.steps.add().index = 0
        return event

    def _output(self, node_id: str, execution_id: int, key: str, spec: dict):
        mlmd = self.mlmd
        typed = tuple(spec.get("typed", ()))
        atype = mlmd.ArtifactType(name=spec["type"])
        for name in typed:  # declared properties, as TFX registers its artifact types
            atype.properties[name] = mlmd.INT
        uri = self.root / node_id / key / str(execution_id)
        uri.mkdir(parents=True, exist_ok=True)
        if "write" in spec:
            spec["write"](uri)
        art = mlmd.Artifact(
            type_id=self.store.put_artifact_type(atype), uri=str(uri), state=mlmd.Artifact.LIVE
        )
        _set(art, spec.get("props", {}), typed)
        return art, self._event(mlmd.Event.OUTPUT, key)

    def component(
        self,
        node_id: str,
        type_name: str,
        inputs: dict[str, str],
        outputs: dict[str, dict],
        failed: bool = False,
    ) -> bool:
        """One execution: RUNNING, then published COMPLETE (or FAILED, without outputs)."""
        mlmd, store = self.mlmd, self.store
        etype = store.put_execution_type(mlmd.ExecutionType(name=type_name))
        [eid] = store.put_executions(
            [mlmd.Execution(type_id=etype, last_known_state=mlmd.Execution.RUNNING)]
        )
        time.sleep(0.01)  # a measurable duration
        state = mlmd.Execution.FAILED if failed else mlmd.Execution.COMPLETE
        pairs = [
            (self.made[producer][out_key], self._event(mlmd.Event.INPUT, key))
            for key, (producer, out_key) in ((k, v.split(".")) for k, v in inputs.items())
        ]
        keys = [] if failed else list(outputs)
        pairs += [self._output(node_id, eid, key, outputs[key]) for key in keys]
        node_ctx = self.context("node", f"{self.pipeline}.{node_id}")
        contexts = store.get_contexts_by_id([self.pipeline_ctx, self.run_ctx, node_ctx])
        _, art_ids, _ = store.put_execution(
            mlmd.Execution(id=eid, type_id=etype, last_known_state=state),
            pairs,
            contexts,
            reuse_context_if_already_exist=True,
        )
        outs = store.get_artifacts_by_id(art_ids[len(art_ids) - len(keys) :]) if keys else []
        self.made[node_id] = dict(zip(keys, outs, strict=True))
        self.ids[node_id] = eid
        return not failed


def write_sample_run(
    metadata_path: str | Path,
    artifact_root: str | Path,
    *,
    run_id: str = "2025-01-01T00:00:00.000000",
    pipeline: str = PIPELINE,
    pushed_destination: str | Path | None = None,
    pushed_version: int = 1,
    fail_trainer: bool = False,
) -> dict[str, int]:
    """Records one pipeline run; returns ``{node_id: execution_id}``.

    Ingest: 25 inputs = 20 written + 3 quarantined + 2 duplicates. ExampleValidator finds
    one anomaly (``img_max`` in eval). With ``fail_trainer`` the Trainer fails and nothing
    after it runs; else the Evaluator blesses and the Pusher pushes to ``pushed_destination``.
    """
    run = _RunRecorder(_writable_store(Path(metadata_path)), pipeline, run_id, Path(artifact_root))
    counts = {"inputs": 25, "written": 20, "quarantined": 3, "duplicates": 2, "examples": 20}
    run.component("DicomExampleGen", "medflow.components.dicom_example_gen.component.DicomExampleGen", {}, {
        "examples": {"type": "Examples", "props": {"split_names": '["train", "eval"]'}},
        "ingest_report": {
            "type": INGEST_REPORT_TYPE, "write": lambda u: _ingest_report(u, counts),
            # As DicomExampleGen's executor records them: counts and one
            # quarantined_<reason> per reason, all custom properties.
            "props": {**counts, **{f"quarantined_{r}": n for r, n in QUARANTINE.items()}}},
    })  # fmt: skip
    run.component("StatisticsGen", "tfx.components.statistics_gen.component.StatisticsGen",
                  {"examples": "DicomExampleGen.examples"}, {"statistics": {"type": "ExampleStatistics"}})  # fmt: skip
    run.component("SchemaGen", "tfx.components.schema_gen.component.SchemaGen",
                  {"statistics": "StatisticsGen.statistics"}, {"schema": {"type": "Schema"}})  # fmt: skip
    run.component("ExampleValidator", "tfx.components.example_validator.component.ExampleValidator",
                  {"statistics": "StatisticsGen.statistics", "schema": "SchemaGen.schema"},
                  {"anomalies": {"type": "ExampleAnomalies", "write": _anomalies}})  # fmt: skip
    if not run.component("Trainer", "tfx.components.trainer.component.Trainer",
                         {"examples": "DicomExampleGen.examples"}, {"model": {"type": "Model"}},
                         failed=fail_trainer):  # fmt: skip
        return run.ids
    run.component("Evaluator", "tfx.components.evaluator.component.Evaluator", {"model": "Trainer.model"}, {
        "evaluation": {"type": "ModelEvaluation"},
        "blessing": {"type": "ModelBlessing", "props": {
            "blessed": 1, "current_model": str(run.made["Trainer"]["model"].uri),
            "baseline_model": "", "baseline_model_id": 0}},
    })  # fmt: skip
    run.component("Pusher", "medflow.components.pusher.component.ContractPusher",
                  {"model": "Trainer.model", "model_blessing": "Evaluator.blessing", "evaluation": "Evaluator.evaluation"},
                  {"pushed_model": {"type": "PushedModel", "props": {
                      "pushed": 1, "pushed_version": pushed_version,
                      "pushed_destination": str(pushed_destination or "")}}})  # fmt: skip
    return run.ids


def write_pushed_version(models_dir: str | Path, version: int = 1, *, model: str = MODEL) -> Path:
    """A pushed version folder as the ContractPusher leaves it (placeholder SavedModel bytes)."""
    folder = Path(models_dir) / model / str(version)
    (folder / "variables").mkdir(parents=True, exist_ok=True)
    (folder / "saved_model.pb").write_bytes(b"placeholder: listing does not load the model")
    contract = {
        "model_name": model,
        "version": str(version),
        "task": "classification",
        "labels": ["normal", "pneumonia"],
        "intended_use": "Research and clinical decision support only.",
        "preprocessing": {"size": [28, 28], "channels": 1},
        "created_by": "medflow 0.1.0",
        "training_data": {"num_examples": 16, "class_counts": {"0": 8, "1": 8}},
        "metrics": {"eval": EVAL_METRICS},
        "model_sha256": "0" * 64,
        "signatures": {"serving_default": {
            "inputs": {"image": {"dtype": "float32", "shape": [-1, 28, 28, 1]}},
            "outputs": {"probabilities": {"dtype": "float32", "shape": [-1, 2]}}}},
    }  # fmt: skip
    (folder / "contract.json").write_text(json.dumps(contract, indent=2), encoding="utf-8")
    return folder
