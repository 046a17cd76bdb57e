"""``medflow ingest``: DICOM files (+ label manifest) → de-identified TFRecords split by
patient; ``medflow deid-key``: make the secret that keys the de-identification."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medflow.components.dicom.keys import KEY_FILE_ENV, SECRET_ENV, resolve_key
from medflow.core.errors import ConfigError
from medflow.core.pixel_spec import PixelSpec

_KEY_HELP = (
    "The de-identification key (at least 16 bytes) keys the patient pseudonyms, the UID "
    "remapping and the date shifts: the same key gives the same pseudonyms and UIDs on every "
    "run, so batches ingested at different times stay linkable and reruns are identical. It "
    "is read from --deid-key-file (the file's bytes, trailing newline stripped), else from "
    f"the file named by ${KEY_FILE_ENV}, else from ${SECRET_ENV} itself; there is no "
    "built-in default, because "
    "anyone holding the key can re-link pseudonyms to patients by trying candidate IDs. "
    "Make one with `medflow deid-key --out FILE` and keep it out of the output folder."
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ingest",
        help="DICOM files/folder → de-identified tf.Example TFRecords, split by patient",
        description=(
            "Read DICOM files safely, de-identify them (DICOM PS3.15 Annex E), attach labels "
            "from a manifest, preprocess the pixels and write GZIP TFRecords per split under "
            "OUT/<split>/. Every input is written, quarantined (OUT/quarantine/<reason>/) or a "
            "duplicate; OUT/ingest_report.json lists each file. " + _KEY_HELP
        ),
    )
    parser.add_argument(
        "source", metavar="SRC", nargs="?", help="a DICOM file or a folder (recursive)"
    )
    parser.add_argument(
        "--labels",
        metavar="CSV",
        help="label manifest: one key column (SOPInstanceUID, SeriesInstanceUID, "
        "StudyInstanceUID or path), label columns, optional site and split columns",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--workers", type=int, default=1, help="decoding processes (default 1)")
    parser.add_argument(
        "--splits",
        default="train=80,eval=20",
        help="split names and weights for the patient hash (default train=80,eval=20)",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        default=28,
        metavar="N",
        help="model input is N x N pixels, aspect kept and padded (default 28; 0 = original)",
    )
    parser.add_argument(
        "--allow-burned-in",
        action="store_true",
        help="include US/SC/OT/... images whose BurnedInAnnotation is not NO "
        "(only after checking the pixels hold no identifiers)",
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=PixelSpec().max_pixels,
        metavar="N",
        help="refuse an image whose declared or compressed size is over N pixels "
        "(rows x cols x frames x samples), before decoding it (default %(default)s)",
    )
    parser.add_argument(
        "--scan-burned-in",
        action="store_true",
        help="admit images whose BurnedInAnnotation is absent (on US/SC/OT/... or without a "
        "modality) when OCR (Tesseract) finds no text in their pixels; the report records it",
    )
    parser.add_argument(
        "--deid-key-file",
        metavar="FILE",
        help=f"key file (else ${KEY_FILE_ENV}, else ${SECRET_ENV}; see above)",
    )
    add_beam_arguments(parser)
    add_dicomweb_arguments(parser, pull=True)
    parser.set_defaults(func=_run)

    keygen = subparsers.add_parser(
        "deid-key",
        help="write a new random de-identification key file",
        description="Write 32 random bytes (hex) to FILE, readable by its owner only. " + _KEY_HELP,
    )
    keygen.add_argument("--out", required=True, metavar="FILE", help="key file to create")
    keygen.set_defaults(func=_keygen)


def add_beam_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--beam-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="Apache Beam pipeline argument, repeatable, e.g. --beam-arg=--runner=DirectRunner "
        "--beam-arg=--direct_running_mode=multi_processing --beam-arg=--direct_num_workers=2 "
        "(default: DirectRunner with --workers processes)",
    )


def beam_args(args: argparse.Namespace) -> tuple[str, ...]:
    """The ``--beam-arg`` values, each checked to be a ``--name[=value]`` Beam flag."""
    for arg in args.beam_arg:
        if not arg.startswith("--") or len(arg) < 3:
            raise ConfigError(
                f"--beam-arg {arg!r}: a Beam argument starts with --, e.g. "
                "--beam-arg=--runner=DirectRunner"
            )
    return tuple(args.beam_arg)


def add_dicomweb_arguments(parser: argparse.ArgumentParser, pull: bool) -> None:
    """--dicomweb and its query/auth/TLS options (shared with ``medflow predict``)."""
    from medflow.components.dicom import dicomweb as dw

    group = parser.add_argument_group(
        "PACS (DICOMweb)",
        "Instead of SRC, pull from a DICOMweb server: QIDO-RS search, WADO-RS retrieval. "
        f"Credentials never go on the command line: --dicomweb-auth-file FILE (JSON "
        '{"username": ..., "password": ...} or {"token": ...}), else '
        f"${dw.AUTH_FILE_ENV}, else ${dw.TOKEN_ENV} (bearer), else "
        f"${dw.USERNAME_ENV}/${dw.PASSWORD_ENV} (HTTP basic). TLS is always verified.",
    )
    group.add_argument("--dicomweb", metavar="URL", help="DICOMweb root URL")
    group.add_argument(
        "--study", action="append", default=[], metavar="UID", help="StudyInstanceUID (repeat)"
    )
    if pull:
        group.add_argument("--series", metavar="UID", help="SeriesInstanceUID")
        group.add_argument("--modality", metavar="CODE", help="modality, e.g. CT")
        group.add_argument("--date-from", metavar="DATE", help="first StudyDate (YYYY-MM-DD)")
        group.add_argument("--date-to", metavar="DATE", help="last StudyDate (YYYY-MM-DD)")
        group.add_argument(
            "--accessions-from",
            metavar="CSV",
            help="pull the studies of the AccessionNumber column of this CSV",
        )
        group.add_argument(
            "--keep-cache",
            action="store_true",
            help="keep OUT/.dicomweb-cache (identifiable PACS data) after a successful ingest",
        )
    group.add_argument("--dicomweb-auth-file", metavar="FILE", help="credentials file (JSON)")
    group.add_argument(
        "--dicomweb-ca-bundle",
        metavar="FILE",
        help=f"CA certificate(s) to verify the server with (else ${dw.CA_BUNDLE_ENV})",
    )


def dicomweb_source(args: argparse.Namespace):
    """The DicomwebSource the arguments name (credentials from file or environment)."""
    from medflow.components.dicom.dicomweb import DicomwebSource, load_credentials

    return DicomwebSource(
        args.dicomweb,
        load_credentials(args.dicomweb_auth_file),
        ca_bundle=args.dicomweb_ca_bundle,
    )


def dicomweb_query(args: argparse.Namespace):
    from medflow.components.dicom.dicomweb import Query, read_accessions

    return Query(
        study_uids=tuple(args.study),
        series_uid=args.series,
        modality=args.modality.upper() if args.modality else None,
        date_from=args.date_from,
        date_to=args.date_to,
        accession_numbers=read_accessions(args.accessions_from) if args.accessions_from else (),
    )


def _options(args: argparse.Namespace):
    """The validated IngestOptions of the command line."""
    # pydicom-backed modules load here, not at import: `medflow --help` stays fast
    from medflow.components.dicom.reader import ReadLimits
    from medflow.components.ingest.engine import IngestOptions, parse_splits

    if args.workers < 1:
        raise ConfigError(f"--workers {args.workers}: must be 1 or more")
    runner_args = beam_args(args)
    if args.image_size < 0:
        raise ConfigError(f"--image-size {args.image_size}: must be 0 (original) or more")
    if args.max_pixels < 1:
        raise ConfigError(f"--max-pixels {args.max_pixels}: must be 1 or more")
    size = (args.image_size, args.image_size) if args.image_size else None
    return IngestOptions(
        pixel=PixelSpec(size=size, max_pixels=args.max_pixels),
        limits=ReadLimits(max_pixels=args.max_pixels),
        splits=parse_splits(args.splits),
        allow_burned_in=args.allow_burned_in,
        scan_burned_in=args.scan_burned_in,
        workers=args.workers,
        beam_args=runner_args,
    )


def _pull_and_ingest(args: argparse.Namespace, query, key, manifest, options):
    """Ingest of a PACS pull (--dicomweb), with its pull summary printed."""
    from tqdm import tqdm

    from medflow.components.ingest.dicomweb_ingest import ingest_dicomweb

    report, pulled = ingest_dicomweb(
        dicomweb_source(args),
        query,
        args.out,
        key,
        manifest,
        options,
        keep_cache=args.keep_cache,
        pull_progress=lambda it, n: tqdm(it, total=n, unit="instance", desc="pull", disable=None),
    )
    print(
        f"pulled {pulled.instances} instance(s) of {pulled.studies} study(ies) from "
        f"{pulled.url}: {pulled.retrieved} retrieved, {pulled.cached} already cached"
        + (f", {pulled.failed} failed (quarantined as fetch_failed)" if pulled.failed else "")
    )
    return report


def _run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from medflow.components.ingest.engine import ingest
    from medflow.components.ingest.manifest import read_manifest

    options = _options(args)
    if bool(args.source) == bool(args.dicomweb):
        raise ConfigError("give either SRC (files or a folder) or --dicomweb URL, not both")
    query = dicomweb_query(args) if args.dicomweb else None
    key = resolve_key(args.deid_key_file)
    manifest = read_manifest(args.labels) if args.labels else None
    if args.dicomweb:
        report = _pull_and_ingest(args, query, key, manifest, options)
    else:
        report = ingest(
            args.source,
            args.out,
            key,
            manifest,
            options,
            progress=lambda it, n: tqdm(it, total=n, unit="file", desc="ingest", disable=None),
        )
    print(report.table())
    print(f"report: {Path(args.out) / 'ingest_report.json'}")
    counts = report.counts
    if counts["inputs"] and not counts["written"]:
        print(
            f"medflow ingest: error: none of the {counts['inputs']} inputs was written "
            "(all quarantined or duplicates); see the reasons above",
            file=sys.stderr,
        )
        return 1
    return 0


def _keygen(args: argparse.Namespace) -> int:
    from medflow.components.dicom.keys import create_key_file

    print(f"wrote a new de-identification key to {create_key_file(args.out)}")
    return 0
