"""Driver of DicomExampleGen: fingerprint the inputs so caching follows the data."""

from __future__ import annotations

import hashlib
import os

from tfx.dsl.components.base import base_driver as legacy_driver
from tfx.orchestration import data_types_utils
from tfx.orchestration.portable import base_driver
from tfx.orchestration.portable import data_types as portable_data_types
from tfx.proto.orchestration import driver_output_pb2


def folder_fingerprint(input_base: str, label_manifest: str = "") -> str:
    """SHA-256 over (relative path, size, mtime) of every file, plus the manifest's bytes.

    Order-independent of directory listing order; a missing folder fingerprints as such
    (the executor then fails with a clear error).
    """
    digest = hashlib.sha256()
    entries = []
    for root, dirs, files in os.walk(input_base):
        dirs.sort()
        for name in files:
            path = os.path.join(root, name)
            try:
                st = os.stat(path)
            except OSError:
                continue
            entries.append(f"{os.path.relpath(path, input_base)}\0{st.st_size}\0{st.st_mtime_ns}")
    for entry in sorted(entries):
        digest.update(entry.encode("utf-8", "surrogateescape") + b"\n")
    if label_manifest:
        try:
            with open(label_manifest, "rb") as fh:
                digest.update(hashlib.sha256(fh.read()).digest())
        except OSError:
            digest.update(b"manifest-missing")
    return f"files:{len(entries)},sha256:{digest.hexdigest()}"


def dicomweb_fingerprint(
    url: str, query_json: str, auth_file: str | None, label_manifest: str = ""
) -> str:
    """The DICOMweb query and the set of instance UIDs it finds now (QIDO-RS only)."""
    from medflow.components.dicom import dicomweb, dicomweb_pull

    query = dicomweb.query_from_json(query_json)
    source = dicomweb.DicomwebSource(url, dicomweb.load_credentials(auth_file))
    digest = hashlib.sha256(dicomweb_pull.fingerprint(query, source.search(query)).encode())
    digest.update(url.rstrip("/").encode())
    if label_manifest:
        with open(label_manifest, "rb") as fh:
            digest.update(hashlib.sha256(fh.read()).digest())
    return f"dicomweb,sha256:{digest.hexdigest()}"


class FingerprintDriver(legacy_driver.BaseDriver, base_driver.BaseDriver):
    """Adds ``input_fingerprint`` to the exec properties before the cache lookup.

    TFX requires a component's DRIVER_CLASS to derive from the legacy BaseDriver; the
    portable launcher (LocalDagRunner, Kubeflow) calls :meth:`run`.
    """

    def __init__(self, metadata_handle):
        legacy_driver.BaseDriver.__init__(self, metadata_handle)
        base_driver.BaseDriver.__init__(self, metadata_handle)

    def run(
        self, execution_info: portable_data_types.ExecutionInfo
    ) -> driver_output_pb2.DriverOutput:
        props = execution_info.exec_properties
        manifest = props.get("label_manifest") or ""
        if props.get("dicomweb_url"):
            fingerprint = dicomweb_fingerprint(
                props["dicomweb_url"],
                props.get("dicomweb_query") or "{}",
                props.get("dicomweb_auth_file") or None,
                manifest,
            )
        else:
            fingerprint = folder_fingerprint(props["input_base"], manifest)
        result = driver_output_pb2.DriverOutput()
        data_types_utils.set_metadata_value(
            result.exec_properties["input_fingerprint"], fingerprint
        )
        return result
