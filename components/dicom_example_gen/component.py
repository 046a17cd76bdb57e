"""DicomExampleGen: a TFX ExampleGen over medflow's DICOM ingestion library.

Input: a DICOM folder (searched recursively) and an optional label manifest. Outputs:
``examples`` (GZIP TFRecords of ``tf.Example`` in ``Split-<name>/``, split by patient) and
``ingest_report`` (``ingest_report.json`` with per-file outcomes; its counts are also
artifact properties in ML Metadata, so they can be queried without reading files).

Input: a DICOM folder, or a DICOMweb query (QIDO-RS search, WADO-RS retrieval into a
temporary owner-only cache outside the artifact store, then the same ingestion path).

Caching: a custom driver fingerprints the inputs before the cache lookup: for a folder the
relative path, size and mtime of every file; for DICOMweb the query and the set of instance
UIDs it finds (a QIDO-RS search, no retrieval); plus the manifest's content. Unchanged
inputs are served from cache; any added, removed or rewritten instance reruns ingestion.
"""

from __future__ import annotations

from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import channel, component_spec, standard_artifacts
from tfx.types.artifact import Artifact

from medflow.components.dicom_example_gen import driver, executor


class IngestReport(Artifact):
    """Where every input went: written, quarantined (with reasons) or duplicate.

    The counts are integer custom properties (``inputs``, ``written``, ``quarantined``,
    ``duplicates``, ``examples``, ``quarantined_<reason>``): Kubeflow V2 accepts no typed
    properties on custom artifact types.
    """

    # "<namespace>.<Name>": the form Kubeflow V2 requires of custom artifact types.
    TYPE_NAME = "medflow.IngestReport"


class DicomExampleGenSpec(component_spec.ComponentSpec):
    """Parameters and outputs of :class:`DicomExampleGen`."""

    PARAMETERS = {
        "input_base": component_spec.ExecutionParameter(type=str, optional=True),
        # A DICOMweb source instead of a folder: the root URL, the query (JSON of
        # components.dicom.dicomweb.Query fields) and a credentials file (never the secret).
        "dicomweb_url": component_spec.ExecutionParameter(type=str, optional=True),
        "dicomweb_query": component_spec.ExecutionParameter(type=str, optional=True),
        "dicomweb_auth_file": component_spec.ExecutionParameter(type=str, optional=True),
        "label_manifest": component_spec.ExecutionParameter(type=str, optional=True),
        "image_size": component_spec.ExecutionParameter(type=int),
        "channels": component_spec.ExecutionParameter(type=int, optional=True),
        "splits": component_spec.ExecutionParameter(type=str),
        # A file holding the de-identification secret (never the secret itself: the
        # parameters are stored in ML Metadata and in compiled pipeline specs).
        "deid_key_file": component_spec.ExecutionParameter(type=str),
        "workers": component_spec.ExecutionParameter(type=int, optional=True),
        "allow_burned_in": component_spec.ExecutionParameter(type=int, optional=True),
        "scan_burned_in": component_spec.ExecutionParameter(type=int, optional=True),
        # Set by the driver; part of the cache key.
        "input_fingerprint": component_spec.ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {}
    OUTPUTS = {
        "examples": component_spec.ChannelParameter(type=standard_artifacts.Examples),
        "ingest_report": component_spec.ChannelParameter(type=IngestReport),
    }


class DicomExampleGen(base_beam_component.BaseBeamComponent):
    """DICOM folder + label manifest → de-identified, patient-split Examples."""

    SPEC_CLASS = DicomExampleGenSpec
    # A Beam executor: the pipeline's beam_pipeline_args (runner, workers) reach it.
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)
    DRIVER_CLASS = driver.FingerprintDriver

    def __init__(
        self,
        deid_key_file: str,
        input_base: str = "",
        label_manifest: str = "",
        image_size: int = 28,
        channels: int = 1,
        splits: str = "train=80,eval=20",
        workers: int = 1,
        allow_burned_in: bool = False,
        scan_burned_in: bool = False,
        dicomweb_url: str = "",
        dicomweb_query: str = "",
        dicomweb_auth_file: str = "",
    ):
        """Create the component.

        Args:
            input_base: folder of DICOM files (any depth).
            deid_key_file: file with the de-identification secret (>= 16 bytes).
            label_manifest: label CSV (see ``components.dicom.manifest``); empty for
                unlabeled data.
            image_size: model input rows = cols written into each example.
            channels: 1 (grey) or 3.
            splits: ``name=weight`` pairs assigned by patient, e.g. ``train=80,eval=20``;
                a manifest ``split`` column overrides them per instance.
            workers: decoding processes per Beam worker (the crash-isolating pool); the
                pipeline's beam_pipeline_args choose the runner and its workers.
            allow_burned_in: include US/SC/OT images whose BurnedInAnnotation is not NO.
            scan_burned_in: admit such images when OCR finds no text (the step's image
                needs Tesseract).
            dicomweb_url: pull from this DICOMweb root instead of ``input_base``.
            dicomweb_query: JSON of the QIDO-RS query (``study_uids``, ``series_uid``,
                ``modality``, ``date_from``, ``date_to``, ``accession_numbers``).
            dicomweb_auth_file: credentials file for the PACS (JSON; see
                ``components.dicom.dicomweb.load_credentials``).
        """
        if bool(input_base) == bool(dicomweb_url):
            raise ValueError("DicomExampleGen needs exactly one of input_base and dicomweb_url")
        spec = DicomExampleGenSpec(
            input_base=input_base,
            label_manifest=label_manifest,
            image_size=image_size,
            channels=channels,
            splits=splits,
            deid_key_file=deid_key_file,
            workers=workers,
            allow_burned_in=int(allow_burned_in),
            scan_burned_in=int(scan_burned_in),
            dicomweb_url=dicomweb_url,
            dicomweb_query=dicomweb_query,
            dicomweb_auth_file=dicomweb_auth_file,
            examples=channel.Channel(type=standard_artifacts.Examples),
            ingest_report=channel.Channel(type=IngestReport),
        )
        super().__init__(spec=spec)
