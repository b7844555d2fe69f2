"""Two feed reads at once tell the referrer about an overdue referral once.

On PostgreSQL the two requests run side by side: both find the referral not yet told about.
On SQLite they cannot overlap (each holds the write lock), so this runs on PostgreSQL only,
in a database of its own, with real commits (no per-test rollback)."""

from __future__ import annotations

import contextlib
import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

import gateway.services.referrals as referral_service
from gateway.models import Change, CohortMembership, Referral
from tests.conftest import build_world
from tests.databases import backends, throwaway_database

PRE_CJ = "pre-cj-referral"


@pytest.mark.skipif("postgresql" not in backends(), reason="needs PostgreSQL")
def test_two_feed_reads_at_once_tell_an_overdue_referral_once(tmp_path, monkeypatch):
    with throwaway_database("postgresql", tmp_path) as url:
        world = build_world("postgresql", tmp_path, url, subjects=40)
        app = world.app
        try:
            engine = app.extensions["gateway.db"].engine
            token = app.test_client().post(
                "/oauth/token",
                data={"grant_type": "client_credentials"},
                headers=world.clients["WMP"].basic_auth,
            ).get_json()["access_token"]
            headers = {"Authorization": f"Bearer {token}", "X-Purpose": PRE_CJ}
            with engine.connect() as connection:
                person = connection.scalar(
                    sa.select(CohortMembership.subject_id)
                    .where(CohortMembership.cohort == "PPO", CohortMembership.end_date.is_(None))
                    .limit(1)
                )
            created = app.test_client().post(
                "/api/v1/referrals",
                headers=headers,
                json={
                    "subject_ref": person,
                    "to_agency": "VSP-MENTOR",
                    "service": "peer_mentoring",
                    "pathways": ["ete"],
                    "reasons": ["prolific_offending"],
                    "consent": {"status": "pending"},
                },
            )
            assert created.status_code == 201, created.get_json()
            referral = created.get_json()["ref"]
            with engine.begin() as connection:
                connection.execute(
                    sa.update(Referral)
                    .where(Referral.id == referral)
                    .values(decision_due=datetime.now(UTC) - timedelta(hours=1))
                )

            # Both requests have found the referral before either tells: the window widened,
            # not what either request does.
            both_found = threading.Barrier(2, timeout=3)
            find = referral_service.Session.scalars

            def scalars_then_wait(self, statement, *args, **kwargs):  # type: ignore[no-untyped-def]
                result = find(self, statement, *args, **kwargs)
                if "overdue_notified_at IS NULL" in str(statement) and "UPDATE" not in str(
                    statement
                ):
                    rows = result.all()
                    with contextlib.suppress(threading.BrokenBarrierError):
                        both_found.wait()
                    return _Rows(rows)
                return result

            monkeypatch.setattr(referral_service.Session, "scalars", scalars_then_wait)
            statuses: list[int] = []

            def read_feed() -> None:
                response = app.test_client().get("/api/v1/changes?limit=500", headers=headers)
                statuses.append(response.status_code)

            readers = [threading.Thread(target=read_feed) for _ in range(2)]
            for reader in readers:
                reader.start()
            for reader in readers:
                reader.join(30)
            assert statuses == [200, 200]
            with engine.connect() as connection:
                told = connection.scalar(
                    sa.select(sa.func.count())
                    .select_from(Change)
                    .where(Change.kind == "referral.overdue", Change.referral_id == referral)
                )
            assert told == 1
        finally:
            app.extensions["gateway.db"].dispose()


class _Rows(list):
    def all(self) -> list:
        return list(self)
