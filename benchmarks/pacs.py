"""Instances/s pulled from a local Orthanc over DICOMweb vs read from disk, same files, one run.

Starts Orthanc with its DICOMweb plugin on loopback (Debian packages ``orthanc`` and
``orthanc-dicomweb``), stores BreastMNIST imported to DICOM with STOW-RS, then times:

- disk: read every file's bytes and parse them with the safe reader;
- pull: QIDO-RS search + one WADO-RS retrieval per instance + atomic cache write, then the
  same safe parse of the cached bytes;
- ingest: ``ingest()`` on the folder vs ``ingest_dicomweb()`` on the same query (everything:
  de-identification, preprocessing, TFRecords, report).

Prints instances/s and the ratios.

    .venv/bin/python benchmarks/pacs.py [--per-split 200]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("MEDFLOW_SHARED_DATA", REPO.parent / "shared" / "data"))


def _rate(n: int, seconds: float) -> str:
    return f"{n / seconds:8.1f} instances/s ({seconds:6.2f} s)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-split", type=int, default=200, help="BreastMNIST images per split")
    args = parser.parse_args()

    from medflow.components.dicom.deid import DeidKey
    from medflow.components.dicom.dicomweb import Credentials, DicomwebSource, Query
    from medflow.components.dicom.dicomweb_pull import pull
    from medflow.components.dicom.reader import parse
    from medflow.components.ingest.dicomweb_ingest import ingest_dicomweb
    from medflow.components.ingest.engine import ingest
    from medflow.components.ingest.npz_import import import_npz
    from tests.integration.orthanc import Orthanc, find_orthanc

    found = find_orthanc()
    if found is None:
        sys.exit("Orthanc with the DICOMweb plugin is not installed (orthanc, orthanc-dicomweb)")
    import tensorflow  # noqa: F401 - imported before timing (ingest writes TFRecords)

    root = Path(tempfile.mkdtemp(prefix="medflow-bench-pacs-"))
    server = Orthanc(root / "orthanc", *found).start()
    try:
        import_npz(SHARED / "breastmnist.npz", root / "npz", limit=args.per_split)
        files = sorted((root / "npz" / "dicom").rglob("*.dcm"))
        n = len(files)
        source = DicomwebSource(server.dicomweb_url, Credentials(*server.auth))
        for i in range(0, n, 100):
            source.store([p.read_bytes() for p in files[i : i + 100]])
        query = Query(modality="DX")
        print(
            f"{n} BreastMNIST DX instances ({sum(p.stat().st_size for p in files)} bytes) on "
            f"Orthanc {server.rest('GET', '/system').json()['Version']}, loopback, 1 client"
        )

        start = time.perf_counter()
        for p in files:
            parse(p.read_bytes(), p.name)
        disk = time.perf_counter() - start

        start = time.perf_counter()
        result = pull(source, query, root / "cache")
        for p in sorted((root / "cache").iterdir()):
            parse(p.read_bytes(), p.name)
        pulled = time.perf_counter() - start
        assert result.retrieved == n, result

        key = DeidKey(b"benchmark-key-0123456789")
        start = time.perf_counter()
        ingest(root / "npz" / "dicom", root / "out-disk", key)
        ingest_disk = time.perf_counter() - start
        start = time.perf_counter()
        report, _ = ingest_dicomweb(source, query, root / "out-pacs", key)
        ingest_pacs = time.perf_counter() - start
        assert report.counts["inputs"] == n

        print(f"read + parse from disk      {_rate(n, disk)}")
        print(
            f"pull (QIDO+WADO) + parse    {_rate(n, pulled)}   {pulled / disk:5.1f}x slower than disk"
        )
        print(f"ingest from folder          {_rate(n, ingest_disk)}")
        print(
            f"ingest --dicomweb           {_rate(n, ingest_pacs)}   "
            f"{ingest_pacs / ingest_disk:5.2f}x slower than the folder"
        )
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
