"""A DICOMweb source: QIDO-RS search, WADO-RS retrieval as Part 10 bytes, STOW-RS storage.

Built on ``dicomweb-client``. Instances come back as the PACS's bytes, never as data sets
parsed by the client, so they go through the same safe reader (:mod:`components.dicom.reader`)
as files do. Credentials come from the environment or a file, never from a flag (shell
history, process lists); TLS certificates are verified unless a CA bundle is given instead.
Connection errors, time-outs and 5xx answers are retried with exponential backoff, then
reported as a :class:`~medflow.errors.ServiceError` that names the study.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

from medflow.components.dicom.log_redaction import redact_http_logs
from medflow.core.errors import ConfigError, InputError, ServiceError

USERNAME_ENV = "MEDFLOW_DICOMWEB_USERNAME"
PASSWORD_ENV = "MEDFLOW_DICOMWEB_PASSWORD"
TOKEN_ENV = "MEDFLOW_DICOMWEB_TOKEN"
AUTH_FILE_ENV = "MEDFLOW_DICOMWEB_AUTH_FILE"
CA_BUNDLE_ENV = "MEDFLOW_DICOMWEB_CA_BUNDLE"

STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00080018"
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_ACCEPT_PART10 = 'multipart/related; type="application/dicom"; transfer-syntax=*'
_T = TypeVar("_T")


@dataclass(frozen=True)
class Credentials:
    """HTTP basic (username/password) or bearer token; secrets are kept out of ``repr``."""

    username: str = ""
    password: str = field(default="", repr=False)
    token: str = field(default="", repr=False)

    @property
    def kind(self) -> str:
        return "bearer" if self.token else "basic" if self.username else "none"


def load_credentials(
    auth_file: str | os.PathLike[str] | None = None, env: dict | None = None
) -> Credentials:
    """Credentials from ``auth_file`` (else ``$MEDFLOW_DICOMWEB_AUTH_FILE``), else from
    ``$MEDFLOW_DICOMWEB_TOKEN``, else ``$MEDFLOW_DICOMWEB_USERNAME``/``_PASSWORD``.

    The file is JSON: ``{"username": ..., "password": ...}`` or ``{"token": ...}``.
    """
    env = os.environ if env is None else env
    path = auth_file or env.get(AUTH_FILE_ENV)
    if path:
        try:
            doc = json.loads(Path(path).read_text())
        except OSError as exc:
            raise ConfigError(f"DICOMweb auth file {path}: cannot read ({exc.strerror})") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"DICOMweb auth file {path}: not JSON ({exc})") from None
        if not isinstance(doc, dict) or not (
            doc.get("token") or (doc.get("username") and "password" in doc)
        ):
            raise ConfigError(
                f'DICOMweb auth file {path}: expected {{"username": ..., "password": ...}} '
                'or {"token": ...}'
            )
        return Credentials(
            str(doc.get("username", "")), str(doc.get("password", "")), str(doc.get("token", ""))
        )
    if env.get(TOKEN_ENV):
        return Credentials(token=env[TOKEN_ENV])
    if env.get(USERNAME_ENV):
        return Credentials(env[USERNAME_ENV], env.get(PASSWORD_ENV, ""))
    return Credentials()


@dataclass(frozen=True)
class Query:
    """What to pull: QIDO-RS filters (all given filters must match).

    Attributes:
        study_uids: StudyInstanceUIDs.
        series_uid: one SeriesInstanceUID.
        modality: e.g. CT (ModalitiesInStudy at study level, Modality at instance level).
        date_from: first StudyDate, YYYYMMDD.
        date_to: last StudyDate, YYYYMMDD.
        accession_numbers: AccessionNumbers (e.g. from the label manifest).
    """

    study_uids: tuple[str, ...] = ()
    series_uid: str | None = None
    modality: str | None = None
    date_from: str | None = None
    date_to: str | None = None
    accession_numbers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for uid in (*self.study_uids, *([self.series_uid] if self.series_uid else [])):
            if not valid_uid(uid):
                raise ConfigError(f"{uid!r} is not a DICOM UID (digits and dots, at most 64)")
        if self.modality and not re.fullmatch(r"[A-Z]{2,4}", self.modality):
            raise ConfigError(f"modality {self.modality!r}: expected a code like CT, MR or DX")
        object.__setattr__(self, "date_from", _date(self.date_from, "--date-from"))
        object.__setattr__(self, "date_to", _date(self.date_to, "--date-to"))
        if not any(asdict(self).values()):
            raise ConfigError(
                "no DICOMweb query: give --study, --series, --modality, --date-from/--date-to "
                "or --accessions-from (medflow does not pull a whole PACS)"
            )

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def query_from_json(text: str) -> Query:
    """A :class:`Query` from its JSON form (``Query.to_dict``), e.g. a pipeline parameter."""
    try:
        fields = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise ConfigError(f"DICOMweb query {text!r} is not JSON ({exc})") from None
    known = set(Query.__dataclass_fields__)
    if not isinstance(fields, dict) or set(fields) - known:
        raise ConfigError(
            f"DICOMweb query {text!r}: expected a JSON object with keys {sorted(known)}"
        )
    for key in ("study_uids", "accession_numbers"):
        if key in fields:
            fields[key] = tuple(fields[key])
    return Query(**fields)


def _date(value: str | None, what: str) -> str | None:
    if not value:
        return None
    text = value.replace("-", "")
    try:
        dt.datetime.strptime(text, "%Y%m%d")
    except ValueError:
        raise ConfigError(f"{what} {value!r}: expected a date YYYY-MM-DD or YYYYMMDD") from None
    return text


def valid_uid(uid: str) -> bool:
    return bool(uid) and len(uid) <= 64 and _UID.fullmatch(uid) is not None


def read_accessions(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """The distinct AccessionNumbers of a CSV manifest's ``AccessionNumber`` column, in order."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            column = next(
                (c for c in reader.fieldnames or () if c.strip().lower() == "accessionnumber"),
                None,
            )
            if column is None:
                raise InputError(f"{path}: no AccessionNumber column (has {reader.fieldnames})")
            values = [(row.get(column) or "").strip() for row in reader]
    except OSError as exc:
        raise InputError(f"accession manifest {path}: cannot read ({exc.strerror})") from None
    found = tuple(dict.fromkeys(v for v in values if v))
    if not found:
        raise InputError(f"{path}: the AccessionNumber column is empty")
    return found


@dataclass(frozen=True, order=True)
class InstanceRef:
    """One instance found by QIDO-RS."""

    study_uid: str
    series_uid: str
    sop_uid: str


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts per request and the first wait between them (doubling, capped)."""

    attempts: int = 4
    backoff_s: float = 0.5
    max_backoff_s: float = 10.0
    timeout_s: float = 60.0


class DicomwebSource:
    """A DICOMweb service (QIDO-RS, WADO-RS, STOW-RS under one root URL).

    Args:
        url: the DICOMweb root, e.g. ``https://pacs.example.org/dicom-web``.
        credentials: see :func:`load_credentials`.
        ca_bundle: a CA certificate file to verify the server with (default: system CAs;
            verification is never switched off).
        retry: see :class:`RetryPolicy`.
        page_size: QIDO-RS results per request.
    """

    def __init__(
        self,
        url: str,
        credentials: Credentials = Credentials(),
        *,
        ca_bundle: str | os.PathLike[str] | None = None,
        retry: RetryPolicy = RetryPolicy(),
        page_size: int = 1000,
    ) -> None:
        import requests
        from dicomweb_client.api import DICOMwebClient

        redact_http_logs()
        if not re.match(r"https?://[^/\s]+", url or ""):
            raise ConfigError(f"--dicomweb {url!r}: expected an http(s):// URL of a DICOMweb root")
        ca_bundle = ca_bundle or os.environ.get(CA_BUNDLE_ENV)
        if ca_bundle and not Path(ca_bundle).is_file():
            raise ConfigError(f"CA bundle {ca_bundle} does not exist")
        self.url = url.rstrip("/")
        self.credentials = credentials  # secrets kept out of repr (see Credentials)
        self.ca_bundle = str(ca_bundle) if ca_bundle else None
        self.retry = retry
        self.page_size = page_size
        session = requests.Session()
        session.verify = str(ca_bundle) if ca_bundle else True
        headers = {}
        if credentials.token:
            headers["Authorization"] = f"Bearer {credentials.token}"
        elif credentials.username:
            session.auth = (credentials.username, credentials.password)
        self._client = DICOMwebClient(
            self.url, session=session, headers=headers, timeout=retry.timeout_s
        )
        self._client.set_http_retry_params(retry=False)  # retried here, with our messages

    # -- QIDO-RS ---------------------------------------------------------------------------

    def search(self, query: Query) -> list[InstanceRef]:
        """All instances matching ``query``, sorted by (study, series, SOP) UID."""
        studies: dict[str, None] = {}
        if query.series_uid and not query.study_uids:
            filters = {"SeriesInstanceUID": query.series_uid}
            for row in self._qido("series search", "-", self._client.search_for_series, filters):
                studies[_value(row, STUDY_UID)] = None
        else:
            for study in query.study_uids or (None,):
                for accession in query.accession_numbers or (None,):
                    filters = _study_filters(query, study, accession)
                    what = f"study search ({study or accession or 'filters'})"
                    for row in self._qido(what, study, self._client.search_for_studies, filters):
                        studies[_value(row, STUDY_UID)] = None
        refs = set()
        for study in studies:
            if not valid_uid(study):
                raise ServiceError(f"{self.url}: QIDO-RS returned an invalid StudyInstanceUID")
            filters = {}
            if query.series_uid:
                filters["SeriesInstanceUID"] = query.series_uid
            if query.modality:
                filters["Modality"] = query.modality
            rows = self._qido(
                "instance search", study, self._client.search_for_instances, filters, study
            )
            for row in rows:
                ref = InstanceRef(study, _value(row, SERIES_UID), _value(row, SOP_UID))
                if not (valid_uid(ref.series_uid) and valid_uid(ref.sop_uid)):
                    raise ServiceError(
                        f"{self.url}: QIDO-RS returned an instance of study {study} without "
                        "valid Series/SOP Instance UIDs"
                    )
                refs.add(ref)
        return sorted(refs)

    def _qido(self, what: str, study: str | None, fn, filters: dict, *args) -> list[dict]:
        """All pages of a search. Pages by limit/offset and stops on a short page or one
        that adds nothing new (dicomweb-client's get_remaining loops forever on servers that
        ignore ``offset``)."""
        rows: list[dict] = []
        seen: set[str] = set()
        while True:
            page = self._call(
                what,
                study,
                functools.partial(
                    fn, *args, search_filters=filters, limit=self.page_size, offset=len(rows)
                ),
            )
            new = [r for r in page if json.dumps(r, sort_keys=True) not in seen]
            seen.update(json.dumps(r, sort_keys=True) for r in new)
            rows += new
            if len(page) < self.page_size or not new:
                return rows

    # -- WADO-RS ---------------------------------------------------------------------------

    def retrieve(self, ref: InstanceRef) -> bytes:
        """One instance as Part 10 bytes in the transfer syntax the PACS stores."""
        url = f"{self.url}/studies/{ref.study_uid}/series/{ref.series_uid}/instances/{ref.sop_uid}"

        def get() -> bytes:
            # dicomweb-client's retrieve_instance() would hand back a pydicom data set parsed
            # without medflow's safety checks; take the raw multipart part instead.
            resp = self._client._http_get(url, headers={"Accept": _ACCEPT_PART10})
            if resp.headers.get("Content-Type", "").startswith("application/dicom"):
                parts = [resp.content]
            else:
                parts = list(self._client._decode_multipart_message(resp, stream=False))
            if len(parts) != 1 or len(parts[0]) < 132 or parts[0][128:132] != b"DICM":
                raise _Incomplete(f"expected one Part 10 instance, got {len(parts)} part(s)")
            return bytes(parts[0])

        return self._call(f"retrieval of instance {ref.sop_uid}", ref.study_uid, get)

    # -- STOW-RS ---------------------------------------------------------------------------

    def store(self, instances: Sequence[bytes], study_uid: str | None = None) -> int:
        """Store Part 10 instances; returns how many the PACS accepted (all, else raises)."""
        if not instances:
            return 0
        url = f"{self.url}/studies" + (f"/{study_uid}" if study_uid else "")
        result = self._call(
            f"storage of {len(instances)} instance(s)",
            study_uid,
            lambda: self._client._http_post_multipart_application_dicom(url, list(instances)),
        )
        failed = result.get("FailedSOPSequence") or []
        if failed:
            reasons = sorted({str(item.get("FailureReason", "?")) for item in failed})
            raise ServiceError(
                f"{self.url}: STOW-RS refused {len(failed)} of {len(instances)} instance(s)"
                f"{' of study ' + study_uid if study_uid else ''} (failure reasons {reasons})"
            )
        return len(instances)

    # -- retries ---------------------------------------------------------------------------

    def _call(self, what: str, study: str | None, fn: Callable[[], _T]) -> _T:
        import requests

        delay = self.retry.backoff_s
        for attempt in range(1, self.retry.attempts + 1):
            try:
                return fn()
            except requests.HTTPError as exc:
                status = exc.response.status_code if exc.response is not None else 0
                if status in (401, 403):
                    raise ServiceError(
                        f"{self.url}: {what} refused with HTTP {status}; check the credentials "
                        f"(${USERNAME_ENV}/${PASSWORD_ENV}, ${TOKEN_ENV} or ${AUTH_FILE_ENV})"
                    ) from None
                if status < 500 and status != 429:
                    raise ServiceError(
                        f"{self.url}: {what}{_of(study)} failed with HTTP {status}"
                    ) from None
                error = f"HTTP {status}"
            except requests.exceptions.SSLError as exc:
                raise ServiceError(
                    f"{self.url}: TLS verification failed ({exc}); pass the PACS's CA "
                    f"certificate with --dicomweb-ca-bundle or ${CA_BUNDLE_ENV}"
                ) from None
            except (requests.RequestException, _Incomplete) as exc:
                error = f"{type(exc).__name__}: {exc}"
            if attempt < self.retry.attempts:
                time.sleep(delay)
                delay = min(delay * 2, self.retry.max_backoff_s)
        raise ServiceError(
            f"{self.url}: {what}{_of(study)} failed after {self.retry.attempts} attempts "
            f"({error}); is the PACS up? Rerun to complete: instances already retrieved are kept"
        )


class _Incomplete(Exception):
    """A response that arrived whole but is not one DICOM instance (retried)."""


def _of(study: str | None) -> str:
    return f" of study {study}" if study and study != "-" else ""


def _study_filters(query: Query, study: str | None, accession: str | None) -> dict:
    filters: dict[str, str] = {}
    if study:
        filters["StudyInstanceUID"] = study
    if accession:
        filters["AccessionNumber"] = accession
    if query.modality:
        filters["ModalitiesInStudy"] = query.modality
    if query.date_from or query.date_to:
        filters["StudyDate"] = f"{query.date_from or ''}-{query.date_to or ''}"
    return filters


def _value(row: dict, tag: str) -> str:
    values = (row.get(tag) or {}).get("Value") or [""]
    return str(values[0])
