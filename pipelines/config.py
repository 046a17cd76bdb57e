"""Pipeline configuration: typed values, no import-time effects.

Constants here are the one place other layers (k8s manifests, Dockerfile, compile, serving)
read shared names from.
"""

from __future__ import annotations

# Container image for pipeline steps (Dockerfile at the repo root builds it; k8s manifests
# and `medflow compile` reference this exact name and tag).
PIPELINE_IMAGE = "medflow/pipeline:0.1.0"
# TF Serving image used on Kubernetes (k8s/base).
SERVING_IMAGE = "tensorflow/serving:2.16.1"

DEFAULT_PIPELINE_NAME = "medflow-classification"
DEFAULT_MODEL_NAME = "medflow-classifier"
DEFAULT_WORKDIR = ".medflow"

# Kubernetes storage shared by the pipeline steps, TF Serving and the dashboard
# (k8s/base/storage/pvcs.yaml). The compiled Kubeflow spec mounts the same claims.
ARTIFACTS_PVC = "medflow-pipeline-artifacts"
ARTIFACTS_MOUNT = "/artifacts"
MODELS_PVC = "medflow-models"
MODELS_MOUNT = "/models"
# Secret holding the de-identification key (k8s/make-secrets.sh), mounted as a file.
DEID_SECRET = "medflow-deid-key"
DEID_KEY_DIR = "/etc/medflow/deid"
DEID_KEY_FILE = f"{DEID_KEY_DIR}/deid.key"
