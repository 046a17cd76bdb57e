"""``medflow import-nifti``: NIfTI volumes (+ masks) -> pseudonymised volumes, labels.csv and
the volume spec that ``medflow ingest`` / ``medflow run`` read."""

from __future__ import annotations

import argparse

from medflow.commands import comma_list
from medflow.components.dicom.keys import KEY_FILE_ENV, SECRET_ENV
from medflow.core.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "import-nifti",
        help="NIfTI volumes + masks → pseudonymised volumes and labels.csv (3D tasks)",
        description=(
            "Check every image (3D, readable) and its mask of the same name (same shape and "
            "affine), then write OUT/images/<id>.nii.gz, OUT/masks/<id>.nii.gz (<id> a "
            "pseudonym keyed by the de-identification key), OUT/labels.csv (path, mask, split) "
            "and OUT/volume_spec.json (target spacing, the fixed grid). Nothing is written when "
            "a pair is bad. Then: medflow run OUT --labels OUT/labels.csv with the 3D task (README)."
        ),
    )
    parser.add_argument("images", metavar="IMAGES_DIR", help="folder of .nii / .nii.gz volumes")
    parser.add_argument("--masks", metavar="MASKS_DIR", help="folder of label maps, same names")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument(
        "--spacing",
        metavar="MM,MM,MM",
        help="target voxel spacing per array axis (default: the first volume's)",
    )
    parser.add_argument(
        "--deid-key-file",
        metavar="FILE",
        help=f"key file (else ${KEY_FILE_ENV}, else ${SECRET_ENV}; see medflow ingest -h)",
    )
    parser.set_defaults(func=_run)


def _spacing(text: str | None) -> tuple[float, float, float] | None:
    if not text:
        return None
    try:
        values = tuple(float(v) for v in comma_list(text))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) <= 0:
        raise ConfigError(f"--spacing {text!r}: give three positive numbers in mm, e.g. 1,1,1")
    return values


def _run(args: argparse.Namespace) -> int:
    from medflow.components.dicom.keys import resolve_key
    from medflow.components.ingest.nifti_import import describe, import_nifti

    manifest = import_nifti(
        args.images,
        args.masks,
        args.out,
        resolve_key(args.deid_key_file),
        spacing=_spacing(args.spacing),
    )
    print(describe(manifest))
    return 0
