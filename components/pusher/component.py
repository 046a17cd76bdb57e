"""ContractPusher: a Pusher that is atomic, idempotent by content and writes contract.json.

Pushes only blessed models to ``<base_directory>/<model_name>/<version>/`` (TF Serving
layout). The version directory is staged on the same filesystem and renamed into place;
a model whose content is already pushed is not pushed again. Beside the SavedModel it
writes ``contract.json`` (a :class:`medflow.core.contract.ModelContract`, checked against its
JSON schema and the SavedModel's signatures).
"""

from __future__ import annotations

from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import channel, component_spec, standard_artifacts

from medflow.components.pusher import executor


class ContractPusherSpec(component_spec.ComponentSpec):
    """Inputs, outputs and parameters of :class:`ContractPusher`."""

    PARAMETERS = {
        "base_directory": component_spec.ExecutionParameter(type=str),
        "model_name": component_spec.ExecutionParameter(type=str),
        # JSON: {"task", "labels", "intended_use", "pixel_spec"}; "preprocessing" ({size,
        # channels}) stands in for a missing "pixel_spec" (see executor.static_fields).
        "contract": component_spec.ExecutionParameter(type=str),
        # 1: refuse to push a model without an out-of-distribution guard.
        "require_guard": component_spec.ExecutionParameter(type=int, optional=True),
    }
    INPUTS = {
        "model": component_spec.ChannelParameter(type=standard_artifacts.Model),
        "model_blessing": component_spec.ChannelParameter(type=standard_artifacts.ModelBlessing),
        "evaluation": component_spec.ChannelParameter(
            type=standard_artifacts.ModelEvaluation, optional=True
        ),
        "statistics": component_spec.ChannelParameter(
            type=standard_artifacts.ExampleStatistics, optional=True
        ),
        # The guard Trainer's Model, published beside the model (components.models.guard).
        "guard_model": component_spec.ChannelParameter(
            type=standard_artifacts.Model, optional=True
        ),
    }
    OUTPUTS = {
        "pushed_model": component_spec.ChannelParameter(type=standard_artifacts.PushedModel),
    }


class ContractPusher(base_component.BaseComponent):
    """Pushes blessed models with a model contract (see module docstring)."""

    SPEC_CLASS = ContractPusherSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(
        self,
        model: channel.BaseChannel,
        model_blessing: channel.BaseChannel,
        base_directory: str,
        model_name: str,
        contract: str,
        evaluation: channel.BaseChannel | None = None,
        statistics: channel.BaseChannel | None = None,
        guard_model: channel.BaseChannel | None = None,
        require_guard: bool = False,
    ):
        """Create the component.

        Args:
            model: Trainer's Model channel.
            model_blessing: Evaluator's ModelBlessing channel.
            base_directory: folder holding ``<model_name>/<version>/``.
            model_name: TF Serving model name.
            contract: JSON of the static contract fields (task, labels, intended_use,
                pixel_spec, or preprocessing ``{size, channels}`` instead of pixel_spec).
            evaluation: Evaluator's ModelEvaluation (metrics copied into the contract).
            statistics: StatisticsGen output (training counts and input value range).
            guard_model: the guard Trainer's Model, published as ``<model_name>-guard`` with
                the model's version numbers, its calibration in the contract's ``guard``.
            require_guard: refuse to push without ``guard_model``.
        """
        spec = ContractPusherSpec(
            model=model,
            model_blessing=model_blessing,
            evaluation=evaluation,
            statistics=statistics,
            guard_model=guard_model,
            require_guard=int(require_guard),
            base_directory=base_directory,
            model_name=model_name,
            contract=contract,
            pushed_model=channel.Channel(type=standard_artifacts.PushedModel),
        )
        super().__init__(spec=spec)
