"""Project exceptions: errors a user can cause, with a message saying what to do.

The CLI prints them as one line (no traceback) and exits non-zero.
"""


class MedflowError(Exception):
    """Base class for errors a user can hit and fix (bad input, missing config, server down)."""

    exit_code = 2


class ConfigError(MedflowError):
    """A missing or invalid setting, flag or configuration file."""


class InputError(MedflowError):
    """Bad input data: a DICOM file, label manifest, npz file or folder that cannot be used."""


class ServiceError(MedflowError):
    """A server medflow talks to (TF Serving, Kubeflow, PACS, database) is down or refused."""

    exit_code = 3
