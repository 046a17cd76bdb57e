"""Plain records returned by the review store (no SQLAlchemy types leak out), and its error."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from medflow.core.errors import InputError

ACTIONS = ("accept", "reject", "correct")
# Audit actions besides "view" and ACTIONS: a refused review ("conflict"), and the events not
# tied to a case (sign-ins, refused sign-ins, lockouts, sign-outs, label exports).
CONFLICT = "conflict"
EVENT_ACTIONS = ("login", "login_failed", "login_locked", "lockout", "logout", "export")
ROLES = ("reviewer", "admin")
SORT_KEYS = ("confidence", "disagreement", "created")
STATUSES = ("pending", "reviewed", "all", "accepted", "rejected", "corrected")


class ReviewError(InputError):
    """A review action or prediction that cannot be recorded (unknown case, bad label...)."""


class AnyState(enum.Enum):
    """``ReviewStore.review(expected_review_id=ANY_STATE)``: save whatever the case's state."""

    ANY = "any"


ANY_STATE = AnyState.ANY


@dataclass(frozen=True)
class Review:
    """One recorded review action on a prediction."""

    id: int
    prediction_id: int
    action: str
    label_index: int | None
    comment: str
    reviewer: str
    created_at: datetime


class ReviewConflict(ReviewError):
    """The case changed since the reviewer saw it; ``latest`` is its review now (None: none)."""

    def __init__(self, message: str, latest: Review | None):
        super().__init__(message)
        self.latest = latest


class AccountLocked(InputError):
    """Sign-in refused: too many failed sign-ins for the user; ``until`` is when it ends (UTC)."""

    def __init__(self, username: str, until: datetime):
        super().__init__(
            f"too many failed sign-ins for {username!r}: signing in is locked until "
            f"{until:%Y-%m-%d %H:%M:%S} UTC; try again after that"
        )
        self.username = username
        self.until = until


@dataclass(frozen=True)
class Prediction:
    """One model prediction on one image frame, as queued for review."""

    id: int
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    frame_index: int
    image_ref: str
    mask_ref: str | None
    heatmap_ref: str | None
    model_name: str
    model_version: str
    labels: list[str]
    scores: list[float]
    predicted_index: int
    confidence: float
    disagreement: float
    status: str
    created_at: datetime
    task: str  # the task plug-in that reviews it (medflow.core.tasks.get_task)
    ood_score: float | None = None  # the model's guard score (None: no guard)
    in_distribution: bool | None = None  # the guard's decision at its threshold

    @property
    def predicted_label(self) -> str:
        return self.labels[self.predicted_index]


@dataclass(frozen=True)
class ReviewedLabel:
    """The label a reviewer settled on for a prediction (latest accept or correct).

    ``task`` is the prediction's task. When its review judges a mask file, ``mask_ref`` is
    the accepted mask file and ``mask_sha256`` the SHA-256 of its bytes when it was accepted.
    """

    prediction_id: int
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    frame_index: int
    label_index: int
    labels: list[str]
    action: str
    reviewer: str
    model_name: str
    model_version: str
    reviewed_at: datetime
    comment: str
    task: str
    mask_ref: str | None = None
    mask_sha256: str | None = None


@dataclass(frozen=True)
class AuditRecord:
    """One append-only audit log entry: who did what, when, on which image, with which model."""

    id: int
    at: datetime
    actor: str
    action: str
    prediction_id: int | None
    study_instance_uid: str | None
    series_instance_uid: str | None
    sop_instance_uid: str | None
    model_name: str | None
    model_version: str | None
    outcome: str


@dataclass(frozen=True)
class User:
    """A dashboard user and their role ("reviewer" or "admin")."""

    username: str
    role: str
