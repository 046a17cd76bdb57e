"""The medflow training pipeline definition, shared by the local and Kubeflow runners.

``create_pipeline`` takes one validated :class:`~medflow.pipelines.config.PipelineConfig` and
the environment (paths, metadata, Beam) as arguments, so runners only resolve those. The
task plug-in of ``config.task`` supplies the Transform and Trainer modules, the Evaluator's
metrics and thresholds and the contract's labels. Component ids (for progress reporting,
platform configs such as the Trainer's GPU request): see :data:`COMPONENT_IDS`.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path

from medflow.pipelines.config import PipelineConfig

RESOLVER_ID = "latest_blessed_model_resolver"
# With PipelineConfig.guard: the out-of-distribution guard's Trainer (after the Trainer).
GUARD_TRAINER_ID = "GuardTrainer"
# With PipelineConfig.guard: the guard's Evaluator (its false-alarm rate on eval, in TFMA).
GUARD_EVALUATOR_ID = "GuardEvaluator"
# With --hparam init=PATH: the Importer of the encoder's model (the Trainer's base_model).
INIT_IMPORTER_ID = "InitImporter"
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
    # Modules, not ``tfx.v1``: that also imports the Google Cloud and Kubeflow extensions
    # (~4 s of CPU per run, for nothing on a local run).
    from tfx import components
    from tfx.proto import example_gen_pb2

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
    return components.ImportExampleGen(
        input_base=data_root,
        input_config=example_gen_pb2.Input(
            splits=[
                example_gen_pb2.Input.Split(name="train", pattern="train/*"),
                example_gen_pb2.Input.Split(name="eval", pattern="eval/*"),
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
    from tfx.orchestration.pipeline import Pipeline

    example_gen = _example_gen(
        config,
        config.data_root if data_root is None else data_root,
        config.label_manifest if label_manifest is None else label_manifest,
        deid_key_file,
    )
    components = [example_gen, *_downstream(config, example_gen, serving_model_dir)]
    return Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=pipeline_root,
        components=components,
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(beam_pipeline_args or []),
    )


def _downstream(config: PipelineConfig, example_gen, serving_model_dir: str) -> list:
    """StatisticsGen ... Pusher on ``example_gen``'s examples, in :data:`COMPONENT_IDS` order."""
    from tfx import components as tfx_components

    task = config.task_plugin
    transform_module, trainer_module = task.module_files()
    examples = example_gen.outputs["examples"]
    statistics_gen = tfx_components.StatisticsGen(examples=examples)
    if config.schema_path:
        schema_gen = tfx_components.ImportSchemaGen(schema_file=config.schema_path)
    else:
        schema_gen = tfx_components.SchemaGen(
            statistics=statistics_gen.outputs["statistics"], infer_feature_shape=True
        )
    schema = schema_gen.outputs["schema"]
    example_validator = tfx_components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema
    )
    # Nothing in medflow reads the Transform's pre/post-transform statistics (StatisticsGen
    # has the raw ones): two TFDV passes and schema inferences saved.
    transform = tfx_components.Transform(
        examples=examples,
        schema=schema,
        custom_config=config.transform_config(),
        disable_statistics=True,
        **user_code(transform_module, "preprocessing_fn"),
    )
    init, trainer, guard_trainer = _trainers(config, trainer_module, transform, schema)
    resolver, evaluator, pusher = _evaluate_and_push(
        config, examples, trainer, guard_trainer, statistics_gen, serving_model_dir
    )
    return [
        statistics_gen,
        schema_gen,
        example_validator,
        transform,
        *([init] if init is not None else []),
        trainer,
        *([guard_trainer] if guard_trainer else []),
        resolver,
        evaluator,
        *([_guard_evaluator(examples, guard_trainer)] if guard_trainer else []),
        pusher,
    ]


def _trainers(config: PipelineConfig, trainer_module: str, transform, schema) -> tuple:
    """(the backbone's init importer or None, the Trainer, the guard's Trainer or None)."""
    from tfx.dsl.components.common.importer import SOURCE_URI_KEY

    trainer_config, init = config.trainer_config(), _init_importer(config)
    if init is not None:  # the Trainer reads exactly the imported version; MLMD links them
        trainer_config["init"] = init.exec_properties[SOURCE_URI_KEY]
    trainer = _trainer(trainer_module, transform, schema, trainer_config, init)
    guard_trainer = None
    if config.guard:  # a second Trainer on the same Transform output (labels unused)
        from medflow.components.models.guard import guard_task

        guard_module = guard_task().module_files()[1]
        guard_trainer = _trainer(guard_module, transform, schema, config.guard_config())
        guard_trainer = guard_trainer.with_id(GUARD_TRAINER_ID)
    return init, trainer, guard_trainer


def _evaluate_and_push(
    config: PipelineConfig, examples, trainer, guard_trainer, statistics_gen, serving_dir: str
) -> tuple:
    """(the latest blessed model's Resolver, the Evaluator, the contract Pusher)."""
    from tfx import components as tfx_components
    from tfx.dsl.components.common.resolver import Resolver
    from tfx.dsl.input_resolution.strategies.latest_blessed_model_strategy import (
        LatestBlessedModelStrategy,
    )
    from tfx.types import Channel, standard_artifacts

    from medflow.components.pusher.component import ContractPusher

    resolver = Resolver(
        strategy_class=LatestBlessedModelStrategy,
        model=Channel(type=standard_artifacts.Model),
        model_blessing=Channel(type=standard_artifacts.ModelBlessing),
    ).with_id(RESOLVER_ID)
    evaluator = tfx_components.Evaluator(
        examples=examples,
        model=trainer.outputs["model"],
        baseline_model=resolver.outputs["model"],
        eval_config=config.task_plugin.eval_config(config.blessing_thresholds(), config.labels),
    )
    pusher = ContractPusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        evaluation=evaluator.outputs["evaluation"],
        statistics=statistics_gen.outputs["statistics"],
        base_directory=serving_dir,
        model_name=config.model_name,
        contract=json.dumps(config.contract(), sort_keys=True),
        guard_model=guard_trainer.outputs["model"] if guard_trainer else None,
        require_guard=config.require_guard,
    ).with_id("Pusher")
    return resolver, evaluator, pusher


def _guard_evaluator(examples, guard_trainer):
    """The guard's Evaluator on the eval split: its false-alarm rate at the calibrated
    threshold as a TFMA metric (the guard task's ``guard_eval_config``)."""
    from tfx import components as tfx_components

    from medflow.components.models.guard import guard_task

    return tfx_components.Evaluator(
        examples=examples,
        model=guard_trainer.outputs["model"],
        eval_config=guard_task().guard_eval_config(),
    ).with_id(GUARD_EVALUATOR_ID)


def _init_importer(config: PipelineConfig):
    """With ``--hparam init=PATH``: an Importer of the pushed version whose encoder initialises
    the backbone, the Trainer's ``base_model`` (ML Metadata records which model initialised
    which); None without ``init``."""
    path = config.hyperparameters.get("init")
    if not path:
        return None
    from tfx.dsl.components.common.importer import Importer
    from tfx.types import standard_artifacts

    from medflow.components.models.encoder_init import resolve

    version = resolve(str(path)).parent.parent.resolve()
    return Importer(source_uri=str(version), artifact_type=standard_artifacts.Model).with_id(
        INIT_IMPORTER_ID
    )


def _trainer(module: str, transform, schema, custom_config: dict, base_model=None):
    """A Trainer of ``module``'s ``run_fn`` on the Transform's train split (eval: eval)."""
    from tfx import components as tfx_components
    from tfx.proto import trainer_pb2

    return tfx_components.Trainer(
        base_model=base_model.outputs["result"] if base_model is not None else None,
        **user_code(module, "run_fn"),
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema,
        train_args=trainer_pb2.TrainArgs(splits=["train"]),
        eval_args=trainer_pb2.EvalArgs(splits=["eval"]),
        custom_config=custom_config,
    )


def user_code(module_path: str, fn_name: str) -> dict[str, str]:
    """How a Transform/Trainer names its user code: ``{fn_name: "package.module.fn"}`` when
    ``module_path`` is a module of an installed package (medflow's own tasks, in the
    pipeline image too), else ``{"module_file": module_path}``.

    A ``module_file`` makes TFX build a wheel of the file's folder when the pipeline is
    compiled and pip-install it into a temporary folder each time the executor loads the
    function (three times in the Transform, once in the Trainer: seconds each); an
    importable name is a plain import.
    """
    name = importable_name(module_path)
    return {fn_name: f"{name}.{fn_name}"} if name else {"module_file": module_path}


def importable_name(module_path: str) -> str | None:
    """Dotted name under which ``module_path`` is imported as it is, or None."""
    import medflow

    target = Path(module_path).resolve()
    package = Path(medflow.__file__).resolve().parent
    # medflow's subpackages may be symlinks to top-level folders (components -> ../components).
    for child in [package, *sorted(p for p in package.iterdir() if p.is_dir())]:
        root = child.resolve()
        if target.is_relative_to(root) and target.suffix == ".py":
            parts = [*target.relative_to(root).with_suffix("").parts]
            prefix = ["medflow"] if child == package else ["medflow", child.name]
            name = ".".join(prefix + parts)
            spec = importlib.util.find_spec(name)
            if spec and spec.origin and Path(spec.origin).resolve() == target:
                return name
    return None
