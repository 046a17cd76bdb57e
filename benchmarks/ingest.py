"""Ingestion throughput vs a bare ``pydicom.dcmread`` + ``.pixel_array`` loop, same files, same run.

Two file sets: PneumoniaMNIST imported to DICOM (many tiny 28x28 files: per-file overhead
dominates) and the pydicom-data files that pydicom decodes (fewer, larger files: decoding
dominates). Each runs with 1 worker and N workers (``--workers``, default 2; both sides use
ingestion's worker start method, a forkserver that the first pool of the run starts and
later pools reuse, so the fastest of the repeats has a warm server on both sides). Ingestion
time includes everything it does (safety checks, de-identification, preprocessing, TFRecord
writing, report); TensorFlow is imported before timing. Each measurement is repeated
(``--repeats``, bare loop and ingestion alternating) and the fastest run of each is kept, so
a burst of load from other jobs on a shared machine does not decide the ratio. Prints
files/s, MB/s and ratios.

    .venv/bin/python benchmarks/ingest.py [--workers 2] [--per-split 1000] [--repeats 3]
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


def _bare_one(path: str) -> int:
    import pydicom

    ds = pydicom.dcmread(path)
    return int(ds.pixel_array.size)


def bare_loop(files: list[Path], workers: int) -> float:
    start = time.perf_counter()
    if workers == 1:
        for f in files:
            _bare_one(str(f))
    else:
        from medflow.components.ingest.workers import _pool_context  # ingestion's start method

        with _pool_context().Pool(workers) as pool:
            pool.map(
                _bare_one, [str(f) for f in files], chunksize=max(1, len(files) // (workers * 8))
            )
    return time.perf_counter() - start


def ingestion(src: Path, workers: int, tmp: Path) -> tuple[float, dict]:
    from medflow.components.dicom.deid import DeidKey
    from medflow.components.ingest.engine import IngestOptions, ingest

    out = tmp / f"out-{workers}"
    shutil.rmtree(out, ignore_errors=True)
    options = IngestOptions(workers=workers, allow_burned_in=True, quarantine_copy=False)
    start = time.perf_counter()
    report = ingest(src, out, DeidKey(b"benchmark-key-0123456789"), options=options)
    return time.perf_counter() - start, report.counts


def decodable(files: list[Path]) -> list[Path]:
    ok = []
    for f in files:
        try:
            _bare_one(str(f))
            ok.append(f)
        except Exception:  # noqa: BLE001 - the bare loop only measures files pydicom decodes
            pass
    return ok


def file_sets(tmp: Path, per_split: int) -> dict[str, Path]:
    from medflow.components.ingest.npz_import import import_npz

    sets = {}
    npz = SHARED / "pneumoniamnist_trainval.npz"
    if npz.is_file():
        import_npz(npz, tmp / "pneumonia", limit=per_split)
        sets["PneumoniaMNIST DX 28x28"] = tmp / "pneumonia" / "dicom"
    try:
        import data_store

        store = Path(data_store.__file__).parent / "data"
        dest = tmp / "pydicom-data"
        dest.mkdir()
        for f in decodable(sorted(store.glob("*.dcm"))):
            shutil.copy(f, dest / f.name)
        sets["pydicom-data (decodable)"] = dest
    except ImportError:
        print("pydicom-data not installed: skipping that set")
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--per-split",
        type=int,
        default=1000,
        help="PneumoniaMNIST images per split (val has 524: 1000 gives 1,524 files)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs of each; the fastest counts")
    args = parser.parse_args()
    import tensorflow  # noqa: F401 - imported once, outside the timings

    tmp = Path(tempfile.mkdtemp(prefix="medflow-bench-"))
    try:
        print(
            f"machine: {os.cpu_count()} CPUs; python {sys.version.split()[0]}; "
            f"load average {os.getloadavg()[0]:.1f}"
        )
        header = f"{'set':<26}{'workers':>8}{'files':>7}{'MB':>8}{'bare f/s':>10}{'ingest f/s':>11}{'ingest MB/s':>12}{'ratio':>7}"
        print(header)
        for name, src in file_sets(tmp, args.per_split).items():
            files = sorted(p for p in src.rglob("*") if p.is_file())
            mb = sum(f.stat().st_size for f in files) / 1e6
            bare_loop(files[:20], 1)  # warm the page cache and imports
            for workers in sorted({1, args.workers}):
                bare, took = float("inf"), float("inf")
                for _ in range(args.repeats):
                    bare = min(bare, bare_loop(files, workers))
                    seconds, counts = ingestion(src, workers, tmp)
                    took = min(took, seconds)
                    assert counts["inputs"] == len(files), counts
                print(
                    f"{name:<26}{workers:>8}{len(files):>7}{mb:>8.1f}{len(files) / bare:>10.1f}"
                    f"{len(files) / took:>11.1f}{mb / took:>12.1f}{bare / took:>7.2f}"
                )
        print("ratio = bare-loop time / ingestion time (1.0 = as fast as only reading + decoding)")
        print(f"fastest of {args.repeats} runs each; load average now {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
