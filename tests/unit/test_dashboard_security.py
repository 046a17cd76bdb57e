"""Dashboard security (issue 23, item 7): lost review edits, sign-in lockout, password policy,
private store files, and the labels export's store and audit record."""

from __future__ import annotations

import io
import logging
import os
import stat
import threading
from datetime import timedelta

import pytest

from medflow import cli
from medflow.core.errors import InputError
from medflow.dashboard import events
from medflow.dashboard.store import AccountLocked, ReviewConflict, ReviewStore
from medflow.workflows.review_samples import seed_store

PASSWORD = "review-pass-1"


@pytest.fixture()
def url(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/review.db"


@pytest.fixture()
def store(url) -> ReviewStore:
    s = ReviewStore(url)
    yield s
    s.close()


def test_second_reviewer_of_a_changed_case_gets_a_conflict(url, store, tmp_path):
    [case] = seed_store(store, tmp_path / "images", 1)
    other = ReviewStore(url)  # bob's dashboard process
    try:
        assert store.latest_review(case) is None and other.latest_review(case) is None
        first = store.review(case, action="accept", reviewer="alice", expected_review_id=None)
        with pytest.raises(ReviewConflict, match="accept by alice") as refused:
            other.review(case, action="reject", reviewer="bob", expected_review_id=None)
    finally:
        other.close()
    assert refused.value.latest.id == first and "reject was not saved" in str(refused.value)
    assert "\n" not in str(refused.value)
    assert store.get_prediction(case).status == "accepted"
    assert store.latest_review(case).id == first
    # Both edits are in the audit log: the saved one, and the refused one as a conflict.
    conflict, accept = [r for r in store.audit_records() if r.action != "view"]
    assert (accept.action, accept.actor) == ("accept", "alice")
    assert (conflict.action, conflict.actor, conflict.prediction_id) == ("conflict", "bob", case)
    assert "refused: " in conflict.outcome and "accept by alice" in conflict.outcome
    # Having seen alice's review, bob may overrule it.
    second = store.review(case, action="reject", reviewer="bob", expected_review_id=first)
    assert (
        store.latest_review(case).id == second and store.get_prediction(case).status == "rejected"
    )


def test_simultaneous_reviews_of_one_case_save_exactly_one(url, store, tmp_path):
    [case] = seed_store(store, tmp_path / "images", 1)
    stores = [ReviewStore(url) for _ in range(6)]
    start = threading.Barrier(len(stores))
    results: list[object] = [None] * len(stores)

    def reviewer(i: int) -> None:
        start.wait()
        try:
            results[i] = stores[i].review(
                case, action="accept", reviewer=f"r{i}", expected_review_id=None
            )
        except ReviewConflict as exc:
            results[i] = exc

    threads = [threading.Thread(target=reviewer, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for s in stores:
        s.close()
    saved = [r for r in results if isinstance(r, int)]
    assert len(saved) == 1, results
    assert sum(isinstance(r, ReviewConflict) for r in results) == len(stores) - 1
    assert len(store.audit_records(action="conflict")) == len(stores) - 1
    assert store.latest_review(case).id == saved[0]


class Clock:
    def __init__(self):
        self.now = events.utcnow()

    def __call__(self):
        return self.now


def test_five_failed_sign_ins_lock_the_user_for_15_minutes(store, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(events, "utcnow", clock)
    store.add_user("alice", PASSWORD, "reviewer")
    for _ in range(4):
        assert store.authenticate("alice", "wrong password!") is None
        clock.now += timedelta(minutes=2)
    locked_at = clock.now
    with pytest.raises(AccountLocked, match="try again after that"):
        store.authenticate("alice", "wrong password!")  # the 5th within 15 minutes
    clock.now += timedelta(minutes=14)
    with pytest.raises(AccountLocked, match="locked until") as refused:
        store.authenticate("alice", PASSWORD)  # the right password is refused meanwhile
    assert refused.value.until == locked_at + events.LOCKOUT
    assert f"{refused.value.until:%H:%M:%S} UTC" in str(refused.value)
    clock.now = locked_at + events.LOCKOUT + timedelta(seconds=1)
    assert store.authenticate("alice", PASSWORD).role == "reviewer"
    actions = [r.action for r in reversed(store.audit_records(actor="alice"))]
    assert actions == ["login_failed"] * 5 + ["lockout", "login_locked", "login"]
    # A sign-in starts the count afresh: four more failures do not lock.
    for _ in range(4):
        assert store.authenticate("alice", "wrong password!") is None
    assert store.authenticate("alice", PASSWORD) is not None


def test_failures_spread_over_more_than_15_minutes_do_not_lock(store, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(events, "utcnow", clock)
    store.add_user("alice", PASSWORD, "reviewer")
    for _ in range(8):
        assert store.authenticate("alice", "wrong password!") is None
        clock.now += timedelta(minutes=4)
    assert store.authenticate("alice", PASSWORD) is not None
    # Unknown names are counted and locked alike, so a lockout does not reveal who exists.
    for _ in range(4):
        assert store.authenticate("mallory", "guess-guess-1") is None
    with pytest.raises(AccountLocked):
        store.authenticate("mallory", "guess-guess-1")


@pytest.mark.parametrize(
    ("user", "password", "rule"),
    [
        ("root", "password", "common password"),
        ("root", "password123", "common password"),
        ("root", "123456789012", "common password"),
        ("root", "qwertyuiop12", "common password"),
        ("root", "letmein", "common password"),
        ("root", "Password2024!", "common password"),
        ("radiologist01", "Radiologist01", "must not be the user name"),
        ("root", "short-pw-1", "at least 12 characters"),
        ("root", "é" * 40, "at most 72 bytes"),
    ],
)
def test_password_policy(store, user, password, rule):
    with pytest.raises(InputError, match=rule) as refused:
        store.add_user(user, password, "admin")
    assert "\n" not in str(refused.value) and store.get_user(user) is None


def test_add_user_command_refuses_a_weak_password(tmp_path, url, monkeypatch, capsys):
    monkeypatch.setenv("MEDFLOW_STORE_URL", url)  # add-user uses it, as the dashboard does
    monkeypatch.setattr("sys.stdin", io.StringIO("password\n"))
    assert cli.main(["dashboard", "add-user", "admin", "--role", "admin"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "common password" in line
    monkeypatch.setattr("sys.stdin", io.StringIO("a-long-Passphrase\n"))
    assert cli.main(["dashboard", "add-user", "admin", "--role", "admin"]) == 0
    assert ReviewStore(url).get_user("admin").role == "admin"


def test_new_store_file_and_folders_are_private(tmp_path):
    old = os.umask(0o022)
    try:
        store = ReviewStore(f"sqlite:///{tmp_path}/new/sub/review.db")
        store.add_user("alice", PASSWORD, "reviewer")
        store.close()
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(tmp_path / "new" / "sub" / "review.db") == 0o600
    assert mode(tmp_path / "new") == 0o700 and mode(tmp_path / "new" / "sub") == 0o700


def test_existing_world_readable_store_is_tightened_with_a_warning(tmp_path, caplog):
    path = tmp_path / "review.db"
    ReviewStore(f"sqlite:///{path}").close()
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        ReviewStore(f"sqlite:///{path}").close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert any("accessible to others" in r.getMessage() for r in caplog.records)


def test_labels_export_reads_the_configured_store_and_is_audited(
    tmp_path, url, store, monkeypatch, capsys
):
    [case] = seed_store(store, tmp_path / "images", 1)
    store.review(case, action="accept", reviewer="alice")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the default store (.medflow/review.db) would be empty here
    monkeypatch.setenv("MEDFLOW_STORE_URL", url)
    monkeypatch.setenv("LOGNAME", "ci-operator")
    out = tmp_path / "labels.csv"
    assert cli.main(["labels", "export", "--out", str(out)]) == 0, capsys.readouterr().err
    assert len(out.read_text().splitlines()) == 2  # header and the accepted case
    [export] = store.audit_records(action="export")
    assert export.actor == "ci-operator (OS user)" and export.prediction_id is None
    assert str(out) in export.outcome and "1 row(s)" in export.outcome
