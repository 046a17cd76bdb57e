"""Ingestion throughput vs a bare ``pydicom.dcmread`` + ``.pixel_array`` loop, same files, same run:
the Beam pipeline (issue 25) on its local default (DirectRunner in-process, N pool workers)
and on DirectRunner multi-processing (N Beam workers, 1 decoding process each), and the
worker-pool ingestion it replaced (``--pool-rev``, default b6a5ae5, unpacked with
``git archive``).

Two file sets: PneumoniaMNIST imported to DICOM (many tiny 28x28 files: per-file overhead
dominates) and the pydicom-data files that pydicom decodes (fewer, larger files: decoding
dominates). Each runs with 1 worker and N workers (``--workers``, default 2; both sides use
ingestion's worker start method, a forkserver that the first pool of the run starts and
later pools reuse, so the fastest of the repeats has a warm server on both sides). Ingestion
time includes everything it does (safety checks, de-identification, preprocessing, TFRecord
writing, report); TensorFlow is imported before timing. Each measurement is repeated
(``--repeats``, bare loop and ingestion alternating) and the fastest run of each is kept, so
a burst of load from other jobs on a shared machine does not decide the ratio. Each
ingestion variant runs in its own process (TensorFlow imported, then its repeats; the old
code needs its own import path); its fixed cost is measured on a one-file folder. Prints
files/s, MB/s and ratios.

    .venv/bin/python benchmarks/ingest.py [--workers 2] [--per-split 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if sys.argv[1:2] != ["--child"]:  # a child imports the code its PYTHONPATH names
    sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("MEDFLOW_SHARED_DATA", REPO.parent / "shared" / "data"))


def _bare_one(path: str) -> int:
    import pydicom

    ds = pydicom.dcmread(path)
    return int(ds.pixel_array.size)


def cpu_seconds() -> float:
    """CPU time of this process and its reaped descendants (a Beam SDK worker is reaped
    when its run ends; forkserver pool workers are not this process's children)."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


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


VARIANTS = ("pool", "beam", "beam-mp")  # today's pool, Beam default, Beam multi-processing


def ingestion(src: Path, workers: int, out: Path, beam_args: list[str]) -> tuple:
    from medflow.components.dicom.deid import DeidKey
    from medflow.components.ingest.engine import IngestOptions, ingest

    shutil.rmtree(out, ignore_errors=True)
    options = IngestOptions(workers=workers, allow_burned_in=True, quarantine_copy=False)
    if beam_args:
        options = IngestOptions(**{**options.__dict__, "beam_args": tuple(beam_args)})
    start, cpu = time.perf_counter(), cpu_seconds()
    report = ingest(src, out, DeidKey(b"benchmark-key-0123456789"), options=options)
    return time.perf_counter() - start, report.counts, cpu_seconds() - cpu


def _one_variant(argv: list[str]) -> None:
    """Child mode: ``--child SRC OUT WORKERS REPEATS [BEAM_ARG...]``: fastest of REPEATS."""
    src, out, workers, repeats, *beam_args = argv
    import tensorflow  # noqa: F401 - imported once, outside the timings

    best, counts, best_cpu = float("inf"), {}, float("inf")
    for _ in range(int(repeats)):
        seconds, counts, cpu = ingestion(Path(src), int(workers), Path(out), beam_args)
        best, best_cpu = min(best, seconds), min(best_cpu, cpu)
    print(json.dumps({"seconds": best, "counts": counts, "cpu": best_cpu}))


def run_variant(variant: str, src: Path, workers: int, tmp: Path, repeats: int, pool_code: Path):
    """(fastest seconds, counts) of ``variant`` with ``workers``, in a child process."""
    beam_args, pool_workers = [], workers
    if variant == "beam-mp":
        beam_args = ["--runner=DirectRunner", "--direct_running_mode=multi_processing"]
        beam_args.append(f"--direct_num_workers={workers}")
        pool_workers = 1
    code = pool_code if variant == "pool" else REPO
    argv = [str(src), str(tmp / f"out-{variant}"), str(pool_workers), str(repeats), *beam_args]
    env = {**os.environ, "PYTHONPATH": str(code), "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", *argv],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{variant} with {workers} worker(s) failed: {done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["seconds"], result["counts"], result["cpu"]


def unpack_rev(rev: str, dest: Path) -> Path:
    """The repository at ``rev`` (the worker-pool ingestion), unpacked into ``dest``."""
    dest.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def _timed_bare(files: list[Path], workers: int) -> tuple[float, float]:
    cpu = cpu_seconds()
    return bare_loop(files, workers), cpu_seconds() - cpu


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


def _row(name: str, workers: int, files: list[Path], mb: float, bare: float, took: dict) -> str:
    cells = "".join(f"{len(files) / took[v]:>12.1f}{bare / took[v]:>7.2f}" for v in VARIANTS)
    return f"{name:<26}{workers:>4}{len(files):>7}{mb:>8.1f}{len(files) / bare:>10.1f}{cells}"


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        _one_variant(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--per-split",
        type=int,
        default=1000,
        help="PneumoniaMNIST images per split (val has 524: 5000 gives all 5,232 files)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs of each; the fastest counts")
    parser.add_argument("--pool-rev", default="b6a5ae5", help="commit of the worker-pool code")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="medflow-bench-"))
    try:
        pool_code = unpack_rev(args.pool_rev, tmp / "pool-code")
        print(
            f"machine: {os.cpu_count()} CPUs; python {sys.version.split()[0]}; "
            f"load average {os.getloadavg()[0]:.1f}"
        )
        one = tmp / "one-file"
        for name, src in file_sets(tmp, args.per_split).items():
            files = sorted(p for p in src.rglob("*") if p.is_file())
            if not one.exists():  # fixed cost: a one-file folder, each variant, 1 worker
                one.mkdir()
                shutil.copy(files[0], one)
                fixed = {
                    v: run_variant(v, one, 1, tmp, args.repeats, pool_code)[2] for v in VARIANTS
                }
                print(
                    "fixed cost (one file, CPU s): "
                    + ", ".join(f"{v} {t:.3f}" for v, t in fixed.items())
                )
                print(
                    f"{'set':<26}{'wk':>4}{'files':>7}{'MB':>8}{'bare f/s':>10}"
                    + "".join(f"{v + ' f/s':>12}{'ratio':>7}" for v in VARIANTS)
                )
            mb = sum(f.stat().st_size for f in files) / 1e6
            bare_loop(files[:20], 1)  # warm the page cache and imports
            for workers in sorted({1, args.workers}):
                bare, bare_cpu = min(_timed_bare(files, workers) for _ in range(args.repeats))
                took, cpu = {}, {}
                for variant in VARIANTS:
                    took[variant], counts, cpu[variant] = run_variant(
                        variant, src, workers, tmp, args.repeats, pool_code
                    )
                    assert counts["inputs"] == len(files), (variant, counts)
                print(_row(name, workers, files, mb, bare, took))
                if workers == 1:  # CPU seconds: robust to load from other jobs (1 process)
                    print(_row(f"  CPU s (bare {bare_cpu:.2f})", 1, files, mb, bare_cpu, cpu))
        print("ratio = bare-loop time / ingestion time (1.0 = as fast as only reading + decoding)")
        print("pool = worker-pool ingestion at --pool-rev; beam = Beam pipeline, DirectRunner in")
        print("  process + N pool workers (the default); beam-mp = DirectRunner multi_processing,")
        print("  N Beam workers decoding in-process")
        print("CPU s rows (1 worker): the same ratio from CPU seconds of the whole process tree,")
        print("  which load from other jobs moves far less than wall time")
        print(f"fastest of {args.repeats} runs each; load average now {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
