"""DicomExampleGen executor: TFX glue around :func:`components.dicom.ingest.ingest`."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from tfx import types
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_executor
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils

from medflow.components.dicom.keys import load_key_file
from medflow.components.ingest.engine import REPORT_NAME, IngestOptions, ingest, parse_splits
from medflow.components.ingest.manifest import read_manifest
from medflow.core.pixel_spec import PixelSpec

log = logging.getLogger(__name__)

SPLIT_DIR = "Split-{split}"  # TFX's layout inside an Examples artifact
REPORT_COUNTS = ("inputs", "written", "quarantined", "duplicates", "examples")


class Executor(base_beam_executor.BaseBeamExecutor):
    """Ingests the DICOM folder straight into the Examples artifact's split folders, with
    the pipeline's ``beam_pipeline_args`` (the same runner as StatisticsGen, Transform and
    the Evaluator)."""

    def Do(  # noqa: N802 (TFX API)
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        del input_dict
        examples = artifact_utils.get_single_instance(output_dict["examples"])
        report_artifact = artifact_utils.get_single_instance(output_dict["ingest_report"])
        size = int(exec_properties["image_size"])
        options = IngestOptions(
            pixel=PixelSpec(size=(size, size), channels=int(exec_properties.get("channels") or 1)),
            splits=parse_splits(exec_properties["splits"]),
            split_dir=SPLIT_DIR,
            allow_burned_in=bool(exec_properties.get("allow_burned_in")),
            scan_burned_in=bool(exec_properties.get("scan_burned_in")),
            # Quarantined files still carry identifiers: list them, never copy them into
            # the artifact store.
            quarantine_copy=False,
            workers=int(exec_properties.get("workers") or 1),
            beam_args=tuple(str(a) for a in self._beam_pipeline_args),
        )
        manifest_path = exec_properties.get("label_manifest") or ""
        manifest = read_manifest(manifest_path) if manifest_path else None
        key = load_key_file(exec_properties["deid_key_file"])
        if exec_properties.get("dicomweb_url"):
            report = _ingest_dicomweb(exec_properties, examples.uri, key, manifest, options)
        else:
            report = ingest(exec_properties["input_base"], examples.uri, key, manifest, options)

        examples.split_names = artifact_utils.encode_split_names([s for s, _ in options.splits])
        examples_utils.set_payload_format(examples, example_gen_pb2.PayloadFormat.FORMAT_TF_EXAMPLE)
        examples_utils.set_file_format(examples, "tfrecords_gzip")
        counts = report.counts
        for name in REPORT_COUNTS:
            report_artifact.set_int_custom_property(name, int(counts[name]))
        for reason, n in report.quarantine_reasons.items():
            report_artifact.set_int_custom_property(f"quarantined_{reason}", n)
        os.makedirs(report_artifact.uri, exist_ok=True)
        shutil.move(
            os.path.join(examples.uri, REPORT_NAME), os.path.join(report_artifact.uri, REPORT_NAME)
        )
        log.info("DicomExampleGen: %s", report.table().replace("\n", " | "))


def _ingest_dicomweb(exec_properties, out: str, key, manifest, options):
    """Pull the query into a temporary owner-only cache (never the artifact store: it holds
    identifiable data), then ingest it; the cache is removed afterwards."""
    import tempfile

    from medflow.components.dicom import dicomweb
    from medflow.components.ingest.dicomweb_ingest import ingest_dicomweb

    source = dicomweb.DicomwebSource(
        exec_properties["dicomweb_url"],
        dicomweb.load_credentials(exec_properties.get("dicomweb_auth_file") or None),
    )
    query = dicomweb.query_from_json(exec_properties.get("dicomweb_query") or "{}")
    with tempfile.TemporaryDirectory(prefix="medflow-dicomweb-") as cache:
        report, pulled = ingest_dicomweb(
            source, query, out, key, manifest, options, cache=Path(cache) / "instances"
        )
    log.info("DicomExampleGen: pulled %s", pulled.to_dict())
    return report
