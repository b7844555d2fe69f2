"""Caseload sync throughput: the full gateway next to a raw SQLAlchemy bulk upsert.

    python -m bench.caseload                    # 100,000 records, SQLite and PostgreSQL
    python -m bench.caseload --records 20000 --backends sqlite

For each backend (PostgreSQL when one answers, as in tests/databases.py), on throwaway
databases migrated like production:

1. **raw**: the same rows written with SQLAlchemy Core, 1,000 records per transaction:
   INSERT for people, identifiers, risk, needs, cohort flags and offences, and an
   INSERT ... ON CONFLICT (agency, local case id) DO UPDATE for the cases. No validation,
   no identity resolution, no audit: the floor a gateway cannot beat.
2. **gateway, first sync**: `POST /api/v1/caseload/sync` through the Flask test client,
   in-process (no sockets; everything else is real): bearer-token authentication, purpose,
   marshmallow validation, the agreement decision per record, identity resolution, the
   writes, change-feed entries for transfer flags, and one audit event per request in the
   same transaction (sealing is the sealer's job and is off here, as it runs elsewhere in
   production).
3. **gateway, unchanged re-sync**: the same batches again; every record must come back
   `unchanged` and nothing but the audit event is written.

Raw and first-sync batches alternate (raw batch 1, gateway batch 1, raw batch 2, ...) on two
databases of the same backend, so drifting machine load weighs on both figures alike.

Targets: first sync >= 0.5 x raw records/s; unchanged re-sync >= 2 x first sync.

Data: synthetic West Midlands caseloads split between NPS (high and very high risk of serious
harm) and CRC (low and medium), 2% misallocated so transfer flags are raised;
PNC/CRN (and for a quarter NOMIS) numbers, names from a Faker pool, 2-5 needs, 0-2 cohort
flags, and further offences on one case in ten.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Flask

from gateway import create_app
from gateway.config import Config
from gateway.db import make_engine
from gateway.migrate import upgrade
from gateway.models import (
    Agency,
    CohortMembership,
    Management,
    Need,
    Offence,
    RiskAssessment,
    Subject,
    SubjectIdentifier,
    new_uuid,
)
from gateway.services.caseload import reoffending_band
from policies.identifiers import normalise_identifier, pnc_check_character
from schemas.caseload import MAX_BATCH
from tests.databases import backends as reachable_backends
from tests.databases import throwaway_database

AREAS = {"BIR": 1073, "COV": 317, "DUD": 313, "SAN": 309, "SOL": 207, "WAL": 269, "WOL": 250}
PATHWAYS = ("accommodation", "ete", "health", "drugs_alcohol", "finance", "children_families",
            "attitudes")
COHORTS = ("PPO", "HCCU", "SAC", "DA", "GANG", "FEMALE", "U12M")
OFFENCES = ("burglary_dwelling", "shoplifting", "other_theft", "violence_with_injury",
            "criminal_damage", "drug_offence", "theft_from_vehicle")
MISALLOCATED = 0.02  # cases whose risk says they belong with the other provider (flagged)
GATEWAY_TARGET, RESYNC_TARGET = 0.5, 2.0


# --- synthetic caseloads ------------------------------------------------------------------


def synthetic_records(count: int, seed: int = 2015) -> list[tuple[str, dict[str, Any]]]:
    """(agency, record) pairs: realistic, valid, and every person distinct."""
    from faker import Faker

    rng = random.Random(seed)  # reproducible synthetic data
    fake = Faker("en_GB")
    fake.seed_instance(seed)
    given = {"male": [fake.first_name_male() for _ in range(300)],
             "female": [fake.first_name_female() for _ in range(300)]}
    family = [fake.last_name() for _ in range(600)]
    today = datetime.now(UTC).date()
    serials = rng.sample(range(1, 10_000_000), count)
    crns = rng.sample(range(1_000_000), count)
    areas, weights = list(AREAS), list(AREAS.values())
    out = []
    for i in range(count):
        nps = rng.random() < 0.4
        harm = rng.choice(("high", "very_high") if nps else ("low", "medium"))
        if rng.random() < MISALLOCATED:
            harm = rng.choice(("low", "medium") if nps else ("high", "very_high"))
        agency = "NPS" if nps else "CRC"
        gender = "female" if rng.random() < 0.15 else "male"
        born = today - timedelta(days=rng.randint(18 * 365, 65 * 365))
        year = rng.randint(max(born.year + 12, 1990), today.year) % 100
        serial = serials[i]
        identifiers = {
            "pnc": f"{year:02d}/{serial:07d}{pnc_check_character(year, serial)}",
            "crn": f"{'DEX'[i % 3]}{crns[i]:06d}",
        }
        if rng.random() < 0.25:
            letters = "".join(rng.choices("ABCDEFGHJKLMNPQRSTUVWXYZ", k=2))
            identifiers["nomis"] = f"A{rng.randrange(10_000):04d}{letters}"
        start = today - timedelta(days=rng.randint(7, 3 * 365))
        record: dict[str, Any] = {
            "local_case_id": f"{agency}-{i:07d}",
            "identifiers": identifiers,
            "given_name": rng.choice(given[gender]),
            "family_name": rng.choice(family),
            "date_of_birth": born.isoformat(),
            "gender": gender,
            "area": rng.choices(areas, weights=weights)[0],
            "status": "active",
            "statutory": True,
            "offender_manager_ref": f"OM-{rng.randrange(10_000, 100_000)}",
            "start_date": start.isoformat(),
            "risk": {
                "serious_harm_level": harm,
                "reoffending_score": rng.randint(0, 100),
                "assessed_on": (start + timedelta(days=rng.randint(0, (today - start).days)))
                .isoformat(),
            },
            "needs": {p: rng.choice(("low", "medium", "high"))
                      for p in rng.sample(PATHWAYS, rng.randint(2, 5))},
            "cohorts": rng.sample(COHORTS, rng.choice((0, 1, 1, 2))),
        }
        if rng.random() < 0.1:
            record["offences"] = [
                {"offence_type": rng.choice(OFFENCES),
                 "offence_date": (today - timedelta(days=rng.randint(1, 700))).isoformat()}
                for _ in range(rng.randint(1, 2))
            ]
        out.append((agency, record))
    # The identifier pool is shared, so a NOMIS number may repeat: keep the first holder only.
    seen: set[str] = set()
    for _, record in out:
        nomis = record["identifiers"].get("nomis")
        if nomis in seen:
            del record["identifiers"]["nomis"]
        elif nomis:
            seen.add(nomis)
    return out


def batches(records: list[tuple[str, dict[str, Any]]], size: int) -> list[tuple[str, list[dict]]]:
    """Each agency's records in batches of `size`, interleaved as two systems would send them."""
    by_agency: dict[str, list[dict]] = {}
    for agency, record in records:
        by_agency.setdefault(agency, []).append(record)
    queues = {a: [rs[i:i + size] for i in range(0, len(rs), size)] for a, rs in by_agency.items()}
    out = []
    while any(queues.values()):
        for agency in sorted(queues):
            if queues[agency]:
                out.append((agency, queues[agency].pop(0)))
    return out


# --- a gateway on a throwaway database ----------------------------------------------------


@dataclass
class Gateway:
    app: Flask
    url: str
    tokens: dict[str, str]


@contextmanager
def gateway(backend: str, directory: Path) -> Iterator[Gateway]:
    """Migrated database, demo agencies and clients (no people), the agreement files."""
    from gateway.agreement_store import load_agreement_files
    from gateway.demo import load_demo

    directory.mkdir(parents=True, exist_ok=True)
    with throwaway_database(backend, directory) as url:
        upgrade(url)
        app = create_app(Config(
            env="test", instance_path=directory / "instance", database_url=url,
            key_dir=directory / "keys", token_lifetime_seconds=3600, audit_seal_in_process=False,
        ))
        app.config["GATEWAY_RATE_LIMIT"] = "10000000 per minute"
        with app.app_context():
            session = app.extensions["gateway.db"].session
            issued = load_demo(session, subjects=0)
            session.flush()
            load_agreement_files(
                session, sorted(app.config["GATEWAY"].agreements_dir.glob("*.yaml"))
            )
            session.commit()
            session.remove()
        tokens = {}
        client = app.test_client()
        for demo in issued:
            if demo.agency in ("NPS", "CRC"):
                basic = base64.b64encode(f"{demo.client_id}:{demo.client_secret}".encode())
                response = client.post("/oauth/token", data={"grant_type": "client_credentials"},
                                       headers={"Authorization": "Basic " + basic.decode()})
                tokens[demo.agency] = response.get_json()["access_token"]
        try:
            yield Gateway(app, url, tokens)
        finally:
            app.extensions["gateway.db"].dispose()


class Sender:
    """Posts batches to the gateway as one partner system per agency would."""

    def __init__(self, gw: Gateway) -> None:
        self.client = gw.app.test_client()
        self.headers = {
            agency: {"Authorization": f"Bearer {token}", "X-Purpose": "caseload-sync"}
            for agency, token in gw.tokens.items()
        }

    def send(self, agency: str, body: bytes, expect: str) -> float:
        """Seconds for one batch; every record must come back with result `expect`."""
        started = time.perf_counter()
        response = self.client.post("/api/v1/caseload/sync", data=body,
                                    headers=self.headers[agency], content_type="application/json")
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise RuntimeError(f"sync failed: {response.status_code} "
                               f"{response.get_data(as_text=True)[:500]}")
        summary = response.get_json()["summary"]
        if summary[expect] != summary["received"]:
            raise RuntimeError(f"expected every record {expect}, got {summary}")
        return elapsed


# --- the raw baseline ---------------------------------------------------------------------


def _upsert(engine: sa.Engine, table: sa.Table, keys: list[str], update: list[str]) -> Any:
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    statement = insert(table)
    if not update:
        return statement.on_conflict_do_nothing(index_elements=keys)
    return statement.on_conflict_do_update(
        index_elements=keys, set_={name: statement.excluded[name] for name in update}
    )


class RawWriter:
    """The same rows bulk-upserted with SQLAlchemy Core, one transaction per batch."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)  # the gateway's engine settings (SQLite: WAL, FKs on)
        with self.engine.connect() as conn:
            self.agency_ids = dict(conn.execute(sa.select(Agency.code, Agency.id)).all())
        self.case_upsert = _upsert(self.engine, Management.__table__,
                                   ["agency_id", "local_case_id"],
                                   ["statutory", "offender_manager_ref", "status", "start_date",
                                    "end_date", "record_hash", "updated_at"])
        self.identifier_insert = _upsert(self.engine, SubjectIdentifier.__table__,
                                         ["scheme", "value"], [])
        self.offence_insert = _upsert(self.engine, Offence.__table__,
                                      ["source", "source_ref", "offence_type", "offence_date"], [])

    def write(self, agency: str, records: list[dict]) -> float:
        """Seconds to build and upsert one batch's rows."""
        started = time.perf_counter()
        now = datetime.now(UTC)
        agency_id = self.agency_ids[agency]
        subjects, identifiers, cases, risks, needs, cohorts, offences = [], [], [], [], [], [], []
        for r in records:
            sid = new_uuid()
            subjects.append({"id": sid, "given_name": r["given_name"],
                             "family_name": r["family_name"], "date_of_birth": r["date_of_birth"],
                             "gender": r["gender"], "area_code": r["area"], "created_at": now,
                             "updated_at": now})
            identifiers.extend({"subject_id": sid, "scheme": s.upper(), "value": v}
                               for s, v in r["identifiers"].items())
            cases.append({"subject_id": sid, "agency_id": agency_id,
                          "local_case_id": r["local_case_id"], "statutory": r["statutory"],
                          "offender_manager_ref": r["offender_manager_ref"], "status": r["status"],
                          "start_date": r["start_date"], "end_date": None, "record_hash": None,
                          "updated_at": now})
            risk = r["risk"]
            risks.append({"subject_id": sid, "reoffending_score": risk["reoffending_score"],
                          "reoffending_band": reoffending_band(risk["reoffending_score"]),
                          "serious_harm_level": risk["serious_harm_level"],
                          "assessed_by_agency_id": agency_id,
                          "assessed_at": datetime.combine(risk["assessed_on"], datetime.min.time(),
                                                          tzinfo=UTC)})
            needs.extend({"subject_id": sid, "pathway": p, "level": lv, "assessed_at": now}
                         for p, lv in r["needs"].items())
            cohorts.extend({"subject_id": sid, "cohort": c, "area_code": r["area"],
                            "start_date": now.date(), "end_date": None} for c in r["cohorts"])
            offences.extend({"subject_id": sid, "offence_type": o["offence_type"],
                             "offence_date": o["offence_date"], "source": "caseload",
                             "source_ref": f"{agency}:{r['local_case_id']}",
                             "reported_by_agency_id": agency_id, "recorded_at": now}
                            for o in r.get("offences", ()))
        with self.engine.begin() as conn:
            conn.execute(Subject.__table__.insert(), subjects)
            conn.execute(self.identifier_insert, identifiers)
            conn.execute(self.case_upsert, cases)
            conn.execute(RiskAssessment.__table__.insert(), risks)
            conn.execute(Need.__table__.insert(), needs)
            if cohorts:
                conn.execute(CohortMembership.__table__.insert(), cohorts)
            if offences:
                conn.execute(self.offence_insert, offences)
        return time.perf_counter() - started

    def close(self) -> None:
        self.engine.dispose()


def _loaded(raw: list[dict]) -> list[dict]:
    """Records as the schema would hand them over: dates parsed, identifiers normalised."""
    out = []
    for r in raw:
        risk = {**r["risk"], "assessed_on": date.fromisoformat(r["risk"]["assessed_on"])}
        out.append({
            **r,
            "date_of_birth": date.fromisoformat(r["date_of_birth"]),
            "start_date": date.fromisoformat(r["start_date"]),
            "identifiers": {s: normalise_identifier(s, v) for s, v in r["identifiers"].items()},
            "risk": risk,
            "offences": [{**o, "offence_date": date.fromisoformat(o["offence_date"])}
                         for o in r.get("offences", ())],
        })
    return out


# --- the run ------------------------------------------------------------------------------


@dataclass
class Figures:
    backend: str
    records: int
    raw: float
    first: float
    resync: float

    def rate(self, seconds: float) -> float:
        return self.records / seconds


def measure(backend: str, records: list[tuple[str, dict]], size: int) -> Figures:
    plan = batches(records, size)
    bodies = [(agency, json.dumps({"records": batch}).encode()) for agency, batch in plan]
    largest = max(len(body) for _, body in bodies)
    limit = Config().max_body_bytes
    if largest > limit:
        raise SystemExit(f"a batch is {largest} bytes, over GATEWAY_MAX_BODY_BYTES {limit}")
    loaded = [(agency, _loaded(batch)) for agency, batch in plan]
    raw = first = resync = 0.0
    with tempfile.TemporaryDirectory(prefix="bench-caseload-") as tmp:
        directory = Path(tmp)
        with gateway(backend, directory / "raw") as raw_world, \
                gateway(backend, directory / "gw") as gw:
            writer, sender = RawWriter(raw_world.url), Sender(gw)
            # Batch by batch, alternately: the machine's load drifts, and both see the same.
            for (agency, body), (_, rows) in zip(bodies, loaded, strict=True):
                raw += writer.write(agency, rows)
                first += sender.send(agency, body, "created")
            writer.close()
            for agency, body in bodies:
                resync += sender.send(agency, body, "unchanged")
    return Figures(BACKEND_LABEL.get(backend, backend), len(records), raw, first, resync)


BACKEND_LABEL = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


def report(figures: list[Figures]) -> str:
    lines = [
        "Caseload sync: records per second (Flask test client in-process; full gateway "
        "path incl. auth, decision, identity resolution, audit event)",
        "",
        f"{'backend':<11} {'records':>8} {'raw upsert':>11} {'gateway':>9} {'re-sync':>9} "
        f"{'gw/raw':>7} {'':5} {'re/gw':>6} {'':5}",
    ]
    for f in figures:
        ratio = f.rate(f.first) / f.rate(f.raw)
        speedup = f.rate(f.resync) / f.rate(f.first)
        lines.append(
            f"{f.backend:<11} {f.records:>8} {f.rate(f.raw):>11,.0f} {f.rate(f.first):>9,.0f} "
            f"{f.rate(f.resync):>9,.0f} {ratio:>7.2f} {_verdict(ratio, GATEWAY_TARGET):5} "
            f"{speedup:>6.2f} {_verdict(speedup, RESYNC_TARGET):5}"
        )
    lines += [
        "",
        f"targets: gateway >= {GATEWAY_TARGET} x raw upsert; unchanged re-sync >= "
        f"{RESYNC_TARGET} x first sync",
    ]
    return "\n".join(lines)


def _verdict(value: float, target: float) -> str:
    return "PASS" if value >= target else "MISS"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.caseload", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000, help="default 100000")
    parser.add_argument("--batch", type=int, default=MAX_BATCH, help="records per request")
    parser.add_argument("--backends", default=",".join(reachable_backends()),
                        help="comma-separated: sqlite,postgresql (default: every reachable one)")
    args = parser.parse_args(argv)
    if not 1 <= args.batch <= MAX_BATCH:
        parser.error(f"--batch must be 1-{MAX_BATCH}")
    logging.getLogger("gateway").setLevel(logging.WARNING)
    started = time.perf_counter()
    records = synthetic_records(args.records)
    print(f"generated {len(records):,} records in {time.perf_counter() - started:.1f}s",
          file=sys.stderr)
    figures = []
    for backend in args.backends.split(","):
        began = time.perf_counter()
        figures.append(measure(backend.strip(), records, args.batch))
        print(f"{backend}: done in {time.perf_counter() - began:.0f}s", file=sys.stderr)
    print(report(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
