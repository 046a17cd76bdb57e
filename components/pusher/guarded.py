"""Publishing a model with its out-of-distribution guard (:mod:`components.models.guard`):
the guard first, then the model, under one version number, so that a model version never
appears before its guard."""

from __future__ import annotations

from medflow.components.pusher import publish
from medflow.core.contract import ModelContract


def publish_guarded(
    model_dir: str,
    model_base: str,
    contract: ModelContract,
    guard_dir: str,
    guard_base: str,
    guard_contract: ModelContract,
) -> tuple[int, str, bool]:
    """Publish the guard, then the model, under one new version number.

    A model whose content is already published is not published again (nor its guard).

    Returns:
        (version, the model's version directory, whether a new version was written).
    """
    same = publish.find_same_content(model_base, publish.content_sha256(model_dir))
    if same:
        return same[0], same[1], False
    version = max(publish.next_version(model_base), publish.next_version(guard_base))
    publish.publish(guard_dir, guard_base, guard_contract, version=version)
    return publish.publish(model_dir, model_base, contract, version=version)
