# medflow pipeline-step image: every TFX component of the Kubeflow pipeline runs in it, and
# the dashboard Deployment (k8s/base) runs `medflow dashboard` from it.
#
# Build (the tag must equal pipelines/config.py::PIPELINE_IMAGE, which `medflow compile` and
# the k8s manifests reference):
#   docker build -t "$(python -c 'from medflow.pipelines.config import PIPELINE_IMAGE as i; print(i)')" .
#
# Base pinned by tag: Python 3.10 is what the pinned TFX 1.16 set supports (see requirements.lock).
FROM python:3.10.13-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/home/medflow

# A fixed numeric uid/gid so Kubernetes' runAsNonRoot can verify it (k8s/base uses 10001).
RUN groupadd --system --gid 10001 medflow \
    && useradd --system --uid 10001 --gid 10001 --home-dir /home/medflow --create-home \
        --shell /usr/sbin/nologin medflow

# Tesseract OCR: DicomExampleGen's scan_burned_in (burned-in text in the pixels).
RUN apt-get update \
    && apt-get install -y --no-install-recommends tesseract-ocr tesseract-ocr-eng \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/medflow

# Dependencies first (own layer): the exact pinned set, installed with pip. The lock keeps
# `pip` itself, which TFX needs at executor time to install the user-module wheel.
COPY requirements.lock ./
# pip byte-compiles at install time: steps run as non-root and cannot write .pyc later.
RUN python -m pip install --no-deps -r requirements.lock

# Then the project (no dependency resolution: the lock above is the whole set).
COPY pyproject.toml README.md ./
COPY medflow ./medflow
COPY components ./components
COPY pipelines ./pipelines
COPY serving ./serving
COPY dashboard ./dashboard
RUN python -m pip install --no-deps . \
    && medflow --version

USER 10001:10001

# No ENTRYPOINT: the compiled Kubeflow spec sets each step's command (the TFX v2 container
# entrypoint), and the k8s Deployments set theirs.
CMD ["medflow", "--help"]
