"""DICOM reading, validation, pixel preprocessing and de-identification (no TFX imports)."""
