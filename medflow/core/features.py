"""Names and layout of the tf.Example features medflow writes at ingestion.

This module is the contract between ingestion (``components.dicom``), the Transform /
Trainer modules, the Evaluator slices, serving and the dashboard. It imports nothing
heavy so every layer can use it.

Image layout: ``IMAGE`` holds the model-input pixels as raw little-endian float32 bytes,
C-order, shape ``IMAGE_SHAPE`` = [rows, cols, channels]. The values are the output of
:func:`components.dicom.pixels.to_model_input`: Modality LUT applied (e.g. HU), VOI
window when configured, MONOCHROME1 inverted, resized with aspect kept and padded.
"""

IMAGE = "image"
IMAGE_SHAPE = "image_shape"
IMAGE_DTYPE = "image_dtype"  # always b"float32" for now

# Per-image statistics computed at ingestion so TFDV can flag unusual batches.
IMAGE_STATS = ("img_mean", "img_std", "img_min", "img_max")

# Pseudonymous / remapped identifiers (de-identified; never the original values).
PATIENT_ID = "patient_id"
STUDY_UID = "study_uid"
SERIES_UID = "series_uid"
SOP_UID = "sop_uid"
FRAME_INDEX = "frame_index"
IDENTIFIERS = (PATIENT_ID, STUDY_UID, SERIES_UID, SOP_UID)

# Header features for validation and slicing (strings; "UNKNOWN" when absent).
MODALITY = "modality"
MANUFACTURER = "manufacturer"
BODY_PART = "body_part"
VIEW_POSITION = "view_position"
SEX = "sex"
AGE_BUCKET = "age_bucket"
SITE = "site"
PHOTOMETRIC = "photometric"
HEADER_STRINGS = (
    MODALITY,
    MANUFACTURER,
    BODY_PART,
    VIEW_POSITION,
    SEX,
    AGE_BUCKET,
    SITE,
    PHOTOMETRIC,
)
SLICE_FEATURES = (MODALITY, MANUFACTURER, SEX, SITE)

# Geometry of the original image and of the resampling done at ingestion.
ORIG_ROWS = "orig_rows"
ORIG_COLS = "orig_cols"
N_FRAMES = "n_frames"
PIXEL_SPACING = "pixel_spacing"  # float [row_mm, col_mm] of the stored image; empty if unknown
RESAMPLE_SCALE = "resample_scale"  # stored pixels per original pixel
RESAMPLE_PAD = "resample_pad"  # int [top, left] padding added after resizing

# Default label feature (manifest column "label"): int64 class index.
LABEL = "label"
# Optional segmentation mask: raw uint8 bytes with the image's rows x cols.
MASK = "mask"

UNKNOWN = "UNKNOWN"

# Volume examples (components.ingest.volume_ingest): IMAGE is float32 [slices, rows, cols, 1]
# on the VolumeSpec grid, MASK uint8 [slices, rows, cols] (class per voxel). The grid maps
# back to the source volume through these (present only in volume examples).
VOLUME_AFFINE = "volume_affine"  # float [16]: grid index (k, i, j, 1) -> LPS mm, row-major
VOLUME_SPACING = "volume_spacing"  # float [3]: the source volume's voxel spacing (mm)
VOLUME_SOURCE_SHAPE = "volume_source_shape"  # int [3]: the source volume's shape
VOLUME_RESAMPLED_SHAPE = "volume_resampled_shape"  # int [3]: after resampling, before padding
VOLUME_OFFSET = "volume_offset"  # int [3]: where the resampled volume sits in the grid
VOLUME_ORIENTATION = "volume_orientation"  # str: axis codes of the source, e.g. "LPS", "RAS"
VOLUME_SPEC = "volume_spec"  # str: the VolumeSpec JSON the grid was made with (model contract)
VOLUME_FEATURES = (
    VOLUME_AFFINE,
    VOLUME_SPACING,
    VOLUME_SOURCE_SHAPE,
    VOLUME_RESAMPLED_SHAPE,
    VOLUME_OFFSET,
    VOLUME_ORIENTATION,
    VOLUME_SPEC,
)
