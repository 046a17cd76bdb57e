"""The medflow training pipeline definition, shared by the local and Kubeflow runners.

``create_pipeline`` takes one validated :class:`~medflow.pipelines.config.PipelineConfig` and
the environment (paths, metadata, Beam) as arguments, so runners only resolve those. The
task plug-in of ``config.task`` supplies the Transform and Trainer modules, the Evaluator's
metrics and thresholds and the contract's labels. Component ids (for progress reporting,
platform configs such as the Trainer's GPU request): see :data:`COMPONENT_IDS`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from medflow.pipelines.config import PipelineConfig

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


def _example_gen(config: PipelineConfig, data_root, label_manifest, deid_key_file: str):
    # TFX imports stay inside functions: importing the pipeline module must not load TFX.
    from tfx import v1 as tfx

    if config.input_format == "dicom":
        from medflow.components.dicom_example_gen.component import DicomExampleGen

        if not deid_key_file:
            raise ValueError("input_format='dicom' needs deid_key_file (the de-identification key)")
        if isinstance(data_root, str) and data_root.startswith(("http://", "https://")):
            source = {
                "dicomweb_url": data_root,
                "dicomweb_query": config.dicomweb_query,
                "dicomweb_auth_file": config.dicomweb_auth_file,
            }
        else:
            source = {"input_base": data_root}
        return DicomExampleGen(
            **source,
            deid_key_file=deid_key_file,
            label_manifest=label_manifest,
            image_size=config.image_size,
            channels=config.channels,
            splits=config.splits,
            workers=config.ingest_workers,
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
    config: PipelineConfig,
    *,
    pipeline_root: str,
    serving_model_dir: str,
    deid_key_file: str = "",
    data_root=None,
    label_manifest=None,
    metadata_connection_config=None,
    beam_pipeline_args: Sequence[str] | None = None,
):
    """Build the TFX pipeline: ExampleGen -> ... -> Evaluator -> ContractPusher.

    Args:
        config: what to run (data, task, model input, names, hyperparameters, thresholds).
        pipeline_root: where artifacts are written.
        serving_model_dir: base folder of the TF Serving layout
            (``<serving_model_dir>/<model_name>/<version>/``).
        deid_key_file: file holding the de-identification key (DICOM input only).
        data_root / label_manifest: override ``config``'s (e.g. Kubeflow runtime parameters).
        metadata_connection_config: MLMD connection (None: the runner's default).
        beam_pipeline_args: Beam options for Beam-based components.

    Returns:
        A ``tfx.dsl.Pipeline``.
    """
    from tfx import v1 as tfx

    example_gen = _example_gen(
        config,
        config.data_root if data_root is None else data_root,
        config.label_manifest if label_manifest is None else label_manifest,
        deid_key_file,
    )
    components = [example_gen, *_downstream(config, example_gen, serving_model_dir)]
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=pipeline_root,
        components=components,
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(beam_pipeline_args or []),
    )


def _downstream(config: PipelineConfig, example_gen, serving_model_dir: str) -> list:
    """StatisticsGen ... Pusher on ``example_gen``'s examples, in :data:`COMPONENT_IDS` order."""
    from tfx import v1 as tfx

    from medflow.components.pusher.component import ContractPusher

    task = config.task_plugin
    transform_module, trainer_module = task.module_files()
    examples = example_gen.outputs["examples"]
    statistics_gen = tfx.components.StatisticsGen(examples=examples)
    if config.schema_path:
        schema_gen = tfx.components.ImportSchemaGen(schema_file=config.schema_path)
    else:
        schema_gen = tfx.components.SchemaGen(
            statistics=statistics_gen.outputs["statistics"], infer_feature_shape=True
        )
    schema = schema_gen.outputs["schema"]
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema
    )
    transform = tfx.components.Transform(
        examples=examples,
        schema=schema,
        module_file=transform_module,
        custom_config=config.transform_config(),
    )
    trainer = tfx.components.Trainer(
        module_file=trainer_module,
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema,
        train_args=tfx.proto.TrainArgs(splits=["train"]),
        eval_args=tfx.proto.EvalArgs(splits=["eval"]),
        custom_config=config.trainer_config(),
    )
    resolver = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id(RESOLVER_ID)
    evaluator = tfx.components.Evaluator(
        examples=examples,
        model=trainer.outputs["model"],
        baseline_model=resolver.outputs["model"],
        eval_config=task.eval_config(config.blessing_thresholds(), config.labels),
    )
    pusher = ContractPusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        evaluation=evaluator.outputs["evaluation"],
        statistics=statistics_gen.outputs["statistics"],
        base_directory=serving_model_dir,
        model_name=config.model_name,
        contract=json.dumps(config.contract(), sort_keys=True),
    ).with_id("Pusher")
    return [
        statistics_gen,
        schema_gen,
        example_validator,
        transform,
        trainer,
        resolver,
        evaluator,
        pusher,
    ]
