"""The medflow training pipeline definition, shared by the local and Kubeflow runners.

``create_pipeline`` takes every environment value as an argument (paths, images,
metadata, Beam) so runners only resolve them. Component ids (for progress reporting,
platform configs such as the Trainer's GPU request): see :data:`COMPONENT_IDS`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from medflow.pipelines.config import DEFAULT_MODEL_NAME
from medflow.pipelines.evaluation import BlessingThresholds, build_eval_config
from medflow.pipelines.seg_evaluation import SegmentationThresholds, build_segmentation_eval_config

INPUT_FORMATS = ("dicom", "tfrecord")
TASKS = ("classification", "segmentation")
# Trainer module file of each task (in components/models/).
TRAINER_MODULES = {"classification": "classification.py", "segmentation": "segmentation.py"}
RESOLVER_ID = "latest_blessed_model_resolver"
# In execution order; the first is "DicomExampleGen" or "ImportExampleGen" by input_format.
COMPONENT_IDS = (
    "ExampleGen",
    "StatisticsGen",
    "SchemaGen",
    "ExampleValidator",
    "Transform",
    "Trainer",
    RESOLVER_ID,
    "Evaluator",
    "Pusher",
)
INTENDED_USE = (
    "Research and clinical decision support only: a second reader that flags images for "
    "review. Not a diagnostic device; not validated outside the training population."
)


def _example_gen(
    input_format: str,
    data_root: str,
    label_manifest: str,
    image_size: int,
    channels: int,
    splits: str,
    deid_key_file: str,
    ingest_workers: int,
    dicomweb_query: str = "",
    dicomweb_auth_file: str = "",
):
    from tfx import v1 as tfx

    if input_format == "dicom":
        from medflow.components.dicom_example_gen.component import DicomExampleGen

        if not deid_key_file:
            raise ValueError("input_format='dicom' needs deid_key_file (the de-identification key)")
        if isinstance(data_root, str) and data_root.startswith(("http://", "https://")):
            source = {
                "dicomweb_url": data_root,
                "dicomweb_query": dicomweb_query,
                "dicomweb_auth_file": dicomweb_auth_file,
            }
        else:
            source = {"input_base": data_root}
        return DicomExampleGen(
            **source,
            deid_key_file=deid_key_file,
            label_manifest=label_manifest,
            image_size=image_size,
            channels=channels,
            splits=splits,
            workers=ingest_workers,
        ).with_id("ExampleGen")
    # Pre-split TFRecords of the feature contract: <data_root>/{train,eval}/*.
    return tfx.components.ImportExampleGen(
        input_base=data_root,
        input_config=tfx.proto.Input(
            splits=[
                tfx.proto.Input.Split(name="train", pattern="train/*"),
                tfx.proto.Input.Split(name="eval", pattern="eval/*"),
            ]
        ),
    )


def create_pipeline(
    *,
    pipeline_name: str,
    pipeline_root: str,
    data_root: str,
    transform_module: str,
    trainer_module: str,
    serving_model_dir: str,
    label_manifest: str = "",
    input_format: str = "dicom",
    splits: str = "train=80,eval=20",
    deid_key_file: str = "",
    ingest_workers: int = 1,
    dicomweb_query: str = "",
    dicomweb_auth_file: str = "",
    image_size: int = 28,
    channels: int = 1,
    labels: Sequence[str] = ("0", "1"),
    model_name: str = DEFAULT_MODEL_NAME,
    hyperparameters: Mapping[str, Any] | None = None,
    thresholds: BlessingThresholds | SegmentationThresholds | None = None,
    task: str = "classification",
    schema_path: str = "",
    intended_use: str = INTENDED_USE,
    metadata_connection_config=None,
    beam_pipeline_args: Sequence[str] | None = None,
    enable_cache: bool = True,
):
    """Build the TFX pipeline: ExampleGen -> ... -> Evaluator -> ContractPusher.

    Args:
        pipeline_name: MLMD context / Kubeflow pipeline name.
        pipeline_root: where artifacts are written.
        data_root: DICOM folder or DICOMweb root URL (``dicom``), or a folder with
            ``train/`` and ``eval/`` TFRecords of the feature contract (``tfrecord``).
        transform_module: path of the Transform module file (``preprocessing_fn``).
        trainer_module: path of the Trainer module file (``run_fn``).
        serving_model_dir: base folder of the TF Serving layout
            (``<serving_model_dir>/<model_name>/<version>/``).
        label_manifest: label CSV for DICOM ingestion.
        input_format: ``dicom`` (DicomExampleGen) or ``tfrecord`` (ImportExampleGen).
        splits: DicomExampleGen split spec, e.g. ``train=80,eval=20`` (by patient).
        deid_key_file: file holding the de-identification key (DICOM input only).
        ingest_workers: DicomExampleGen worker processes.
        dicomweb_query: with an ``http(s)://`` data_root (a DICOMweb root): the QIDO-RS
            query as JSON (see ``components.dicom.dicomweb.Query``).
        dicomweb_auth_file: PACS credentials file (JSON), if the PACS needs them.
        image_size: model input rows = cols.
        channels: 1 or 3.
        labels: class names, index = class id.
        model_name: TF Serving model name.
        hyperparameters: Trainer custom_config overrides (see ``HParams``).
        thresholds: blessing thresholds (defaults of :class:`BlessingThresholds`, or of
            :class:`SegmentationThresholds` for segmentation).
        task: ``classification`` (labels per image) or ``segmentation`` (a mask per image:
            the manifest's ``mask`` column; Evaluator on Dice, IoU and HD95 in mm).
        schema_path: curated schema (folder with schema.pbtxt) imported instead of
            inferring one, so ExampleValidator flags drift against it.
        intended_use: copied into each pushed model's contract.
        metadata_connection_config: MLMD connection (None: the runner's default).
        beam_pipeline_args: Beam options for Beam-based components.
        enable_cache: reuse outputs of unchanged component executions.

    Returns:
        A ``tfx.dsl.Pipeline``.
    """
    from tfx import v1 as tfx

    from medflow.components.pusher.component import ContractPusher

    if input_format not in INPUT_FORMATS:
        raise ValueError(f"input_format={input_format!r}: choose one of {INPUT_FORMATS}")
    if task not in TASKS:
        raise ValueError(f"task={task!r}: choose one of {TASKS}")
    segmentation = task == "segmentation"
    if segmentation and not isinstance(thresholds, SegmentationThresholds):
        thresholds = SegmentationThresholds()
    thresholds = thresholds or BlessingThresholds()
    example_gen = _example_gen(
        input_format,
        data_root,
        label_manifest,
        image_size,
        channels,
        splits,
        deid_key_file,
        ingest_workers,
        dicomweb_query,
        dicomweb_auth_file,
    )
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    if schema_path:
        schema_gen = tfx.components.ImportSchemaGen(schema_file=schema_path)
    else:
        schema_gen = tfx.components.SchemaGen(
            statistics=statistics_gen.outputs["statistics"], infer_feature_shape=True
        )
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    shape_config = {"image_size": image_size, "channels": channels}
    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        module_file=transform_module,
        custom_config=shape_config,
    )
    trainer = tfx.components.Trainer(
        module_file=trainer_module,
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        train_args=tfx.proto.TrainArgs(splits=["train"]),
        eval_args=tfx.proto.EvalArgs(splits=["eval"]),
        custom_config={**shape_config, "labels": list(labels), **dict(hyperparameters or {})},
    )
    resolver = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id(RESOLVER_ID)
    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=resolver.outputs["model"],
        eval_config=(
            build_segmentation_eval_config(thresholds)
            if segmentation
            else build_eval_config(thresholds, len(labels))
        ),
    )
    contract = {
        "task": task,
        "labels": ["background", "foreground"] if segmentation else list(labels),
        "intended_use": intended_use,
        "preprocessing": {"size": [image_size, image_size], "channels": channels},
    }
    pusher = ContractPusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        evaluation=evaluator.outputs["evaluation"],
        statistics=statistics_gen.outputs["statistics"],
        base_directory=serving_model_dir,
        model_name=model_name,
        contract=json.dumps(contract, sort_keys=True),
    ).with_id("Pusher")
    components = [
        example_gen,
        statistics_gen,
        schema_gen,
        example_validator,
        transform,
        trainer,
        resolver,
        evaluator,
        pusher,
    ]
    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=components,
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(beam_pipeline_args or []),
    )


def model_module_paths(task: str = "classification") -> tuple[str, str]:
    """Absolute paths of the packaged (transform, trainer) module files of ``task``."""
    from pathlib import Path

    import medflow.components.models

    if task not in TASKS:
        raise ValueError(f"task={task!r}: choose one of {TASKS}")
    folder = Path(medflow.components.models.__file__).resolve().parent
    return str(folder / "preprocessing.py"), str(folder / TRAINER_MODULES[task])
