"""Model warm-up as TF Serving does it (``--enable_model_warmup``).

A version folder may hold ``assets.extra/tf_serving_warmup_requests``: a TFRecord file of
``tensorflow.serving.PredictionLog`` records (at most 1000). Before the version is served,
each record's request is run on it ``--num_request_iterations_for_warmup`` times, so the
first real requests do not pay for TensorFlow's lazy initialisation. A record that fails
fails the load, as in TF Serving.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_RECORDS = 1000  # TF Serving's limit


class WarmupError(RuntimeError):
    """A warm-up file that cannot be replayed (the version is not served)."""


def read_warmup_records(path: Path) -> list:
    """The PredictionLog records of a warm-up file."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    records = []
    try:
        for raw in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
            if len(records) == MAX_RECORDS:
                raise WarmupError(
                    f"{path}: more than {MAX_RECORDS} warm-up records; keep at most {MAX_RECORDS}"
                )
            records.append(prediction_log_pb2.PredictionLog.FromString(raw))
    except tf.errors.OpError as exc:
        raise WarmupError(f"{path}: not a TFRecord file of PredictionLog: {exc.message}") from exc
    return records


def replay_warmup(loaded, loading) -> int:
    """Replay a version's warm-up requests on it; returns how many requests ran."""
    path = loaded.path / WARMUP_FILE
    if not path.is_file():
        return 0
    records = read_warmup_records(path)
    for record in records:
        for _ in range(loading.warmup_iterations):
            _replay(loaded, record, loading.check_method_name, path)
    log.info(
        "%s version %d: replayed %d warm-up requests", loaded.name, loaded.version, len(records)
    )
    return len(records) * loading.warmup_iterations


def _replay(loaded, record, check_method: bool, path: Path) -> None:
    from tensorflow_serving.apis import classification_pb2, regression_pb2

    from medflow.serving import inference

    kind = record.WhichOneof("log_type")
    if kind == "predict_log":
        inference.predict_on(loaded, record.predict_log.request)
    elif kind == "classify_log":
        response = classification_pb2.ClassificationResponse()
        inference.examples_on(loaded, record.classify_log.request, response, check_method)
    elif kind == "regress_log":
        response = regression_pb2.RegressionResponse()
        inference.examples_on(loaded, record.regress_log.request, response, check_method)
    elif kind == "multi_inference_log":
        for task in record.multi_inference_log.request.tasks:
            cls = (
                classification_pb2.ClassificationRequest
                if task.method_name == inference.CLASSIFY_METHOD
                else regression_pb2.RegressionRequest
            )
            request = cls(
                model_spec=task.model_spec, input=record.multi_inference_log.request.input
            )
            response = (
                classification_pb2.ClassificationResponse()
                if cls is classification_pb2.ClassificationRequest
                else regression_pb2.RegressionResponse()
            )
            inference.examples_on(loaded, request, response, check_method)
    else:
        raise WarmupError(f"{path}: warm-up record of type {kind} is not supported")
