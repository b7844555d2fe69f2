"""Suite `audit` (issue 4): what the tamper-evident log costs a request, how fast it seals and
verifies, and how fast the subject-access question is answered over a large log.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from pathlib import Path

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.orm import Session

import gateway.access
from audit import query
from audit.checkpoint import Checkpoint, CheckpointSigner, public_key_pem
from audit.events import AuditEvent, EventKind
from audit.record import record_event
from audit.seal import seal_pending_events
from audit.verify import read_checkpoint, verify_export
from bench.common import (
    BACKEND_LABEL,
    ROOT,
    Deadline,
    Section,
    Table,
    available_backends,
    ensure_module,
    fmt_rate,
    median,
    per_second,
    spread,
    throwaway_database,
    verdict,
)
from bench.profile import top_self_table
from bench.world import choose_read, demo_world, get_many
from gateway.config import Config
from gateway.db import make_engine
from gateway.migrate import upgrade

LATENCY_TARGET = 1.15  # audit adds at most 15 %
SEAL_TARGET = 20_000  # events/s
VERIFY_TARGET = 100_000  # events/s
ACCESS_TARGET = 0.050  # seconds per subject-access query
KEY_NAME = "iom-gateway.bench/audit"
ORIGIN = "iom-gateway.bench/audit"

SUBJECT_FIELDS = ("ref", "given_name", "family_name", "date_of_birth", "gender", "ethnicity",
                  "address_line", "postcode", "phone", "identifiers", "area", "policing_unit",
                  "cohorts", "risk", "needs", "management", "linked_victims", "updated_at")
# (agency, weight, client, purpose, agreement, grant): who reads the log's subjects how often.
CALLERS = (
    ("WMP", 30, "wmp-demo", "iom-case-management", "core-iom@1", "subject-police-cohorts"),
    ("NPS", 18, "nps-demo", "iom-case-management", "core-iom@1", "subject-own-caseload"),
    ("CRC", 14, "crc-demo", "iom-case-management", "core-iom@1", "subject-own-caseload"),
    ("YOT-BIR", 5, "yot-bir-demo", "iom-case-management", "core-iom@1",
     "subject-youth-caseload"),
    ("YOT-COV", 3, "yot-cov-demo", "iom-case-management", "core-iom@1",
     "subject-youth-caseload"),
    ("VSP-MENTOR", 8, "vsp-mentor-demo", "pre-cj-referral", "pre-cj-referral@1",
     "subject-referred"),
    ("VSP-HOUSING", 7, "vsp-housing-demo", "pre-cj-referral", "pre-cj-referral@1",
     "subject-referred"),
    ("VSP-DVPP", 5, "vsp-dvpp-demo", "dv-perpetrator-programme", "dv-perpetrator-programme@1",
     "subject-referred"),
    ("LA-BIR", 2, "la-bir-demo", "performance-reporting", "performance-reporting@1",
     "metrics-birmingham"),
    ("IG-AUDIT", 8, "ig-audit-demo", "ig-audit", None, None),
)
CALLER_WEIGHTS = [c[1] for c in CALLERS]
CALLER_CUMULATIVE = list(accumulate(CALLER_WEIGHTS))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("audit suite")
    group.add_argument("--audit-rounds", type=int, default=10,
                       help="rounds of the with/without-audit latency comparison (>= 5)")
    group.add_argument("--audit-requests", type=int, default=100,
                       help="requests per round and phase of the latency comparison")
    group.add_argument("--seal-events", type=int, default=100_000,
                       help="events recorded, then sealed, then exported and verified")
    group.add_argument("--access-events", type=int, default=1_000_000,
                       help="events generated for the subject-access query")
    group.add_argument("--access-queries", type=int, default=20,
                       help="subject-access queries timed (random subjects)")


def run(args: argparse.Namespace) -> Section:
    ensure_module("pyinstrument", "pyinstrument")
    section = Section("audit")
    backends, skipped = available_backends(args.backends)
    section.notes += skipped
    targets = Table("Targets (issue 4)", ["measure", "target", "backend", "figure", "result"])
    latency = Table(
        f"Request latency with and without the audit write (in-process Flask test client; "
        f"rounds of {args.audit_requests} requests per phase, alternating request by request)",
        ["backend", "caller / read", "with audit (us, median of round medians)",
         "round medians", "without audit (us)", "round medians",
         "ratio (median of per-round ratios)", "rounds"],
    )
    sealing = Table(
        f"Recording and sealing {args.seal_events:,} events",
        ["backend", "record_event (batches of 500, each committed)",
         "seal until idle (batches of 5,000)", "sealing rounds", "checkpoints signed"],
    )
    verifying = Table(
        "Export and offline verification of the sealed log (verify_export and sha256: median "
        "of 3 rounds on the first backend, 1 on the second; export and CLI: once each)",
        ["backend", "export (write_export)", "export size", "verify_export (in-process)",
         "python -m audit.verify (CLI, incl. start-up)", "sha256 of the file", "sha256 per line",
         "verify / sha256-per-line"],
    )
    access = Table(
        f"Subject-access query over {args.access_events:,} events",
        ["backend", "generate (bulk insert, then index)", "subject rows", "analyse", "median of "
         f"{args.access_queries} random subjects", "slowest", "hottest subject (its events)"],
    )
    stages: list[Table] = []  # the verification profile, filled by the first backend
    section.tables += [targets, latency, sealing, verifying]
    for backend in backends:
        label = BACKEND_LABEL[backend]
        with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
            ratio = _latency(backend, Path(tmp), args, latency)
            targets.add("audit share of a GET /api/v1/subjects/{ref}", "<= +15 %", label,
                        f"+{(ratio - 1) * 100:.1f} %", verdict(ratio <= LATENCY_TARGET))
            seal_rate, verify_rate, cli_rate = _seal_and_verify(
                backend, Path(tmp), args, sealing, verifying, stages)
            targets.add("sealing rate", f">= {SEAL_TARGET:,} events/s", label,
                        fmt_rate(seal_rate), verdict(seal_rate >= SEAL_TARGET))
            targets.add("verification rate (verify_export)", f">= {VERIFY_TARGET:,} events/s",
                        label, fmt_rate(verify_rate), verdict(verify_rate >= VERIFY_TARGET))
            targets.add("verification rate (CLI incl. start-up)",
                        f">= {VERIFY_TARGET:,} events/s", label, fmt_rate(cli_rate),
                        verdict(cli_rate >= VERIFY_TARGET))
            query_median = _subject_access(backend, Path(tmp), args, access)
            targets.add(f"subject-access query, {args.access_events:,} events", "< 50 ms",
                        label, f"{query_median * 1000:.1f} ms",
                        verdict(query_median < ACCESS_TARGET))
    section.tables += [*stages, access]
    latency.notes.append(
        "\"without\" replaces gateway.access.record_event with a no-op for that phase only; "
        "the event is still built (build_event) and the session still commits, so the "
        "ratio is the cost of encoding, inserting and durably committing the event and its "
        "subject rows: a read runs outside a transaction until its audit write, so without "
        "one it writes nothing (on SQLite it still takes the write lock for an empty "
        "transaction; on PostgreSQL it opens none and flushes no WAL). Each "
        "round's figure is the median of its requests' latencies; with and without alternate "
        "request by request, so bursts of load from other jobs on the machine hit both.")
    sealing.notes.append(
        "seal_pending_events with the gateway's settings (batch 5,000, a checkpoint every "
        "1,000 events or 5 s, at most one per second), each call committed, until idle.")
    verifying.notes.append(
        "sha256 per line = one hashlib.sha256 per export line: the floor for any verifier that "
        "hashes each event once; verify_export also parses, re-canonicalises and checks each "
        "event and folds it into the Merkle frontier.")
    access.notes += [
        "Rows are bulk-inserted straight into audit_events / audit_event_subjects of a migrated "
        "database (executemany on SQLite, COPY on PostgreSQL, 50,000 events per transaction) "
        "with the secondary indexes dropped, which are then rebuilt from the database's own "
        "definitions, then ANALYZE (PostgreSQL: VACUUM ANALYZE, as autovacuum would). "
        "Foreign-key checks are off during the load (the rows are consistent by construction; "
        "SQLite: PRAGMA foreign_keys, PostgreSQL: session_replication_role). Bodies "
        "are short placeholders: the query never reads them. Unsealed, as allowed.",
        "Spread: 2,000 subjects; 80 % single-subject reads picking a subject by Zipf-like "
        "popularity (s = 0.8), 20 % list pages of 2-50 consecutive subjects in id order; 10 "
        "agencies weighted like the demo partnership; 5 % denials; times spread over one year. "
        "Queries: audit.query.subject_accesses for subjects drawn uniformly, after 3 warm-up "
        "queries; the hottest subject is timed separately.",
    ]
    return section


# --- 1. latency with and without the audit write -------------------------------------------


def _latency(backend: str, tmp: Path, args: argparse.Namespace, table: Table) -> float:
    with demo_world(backend, tmp / "world", subjects=args.subjects) as world:
        read = choose_read(world)
        client = world.app.test_client()
        headers = {"Authorization": f"Bearer {world.token(read.agency)}",
                   "X-Purpose": read.purpose}
        paths = read.paths()
        get_many(client, paths, headers, 100)  # warm caches, token cache, policy
        original = gateway.access.record_event
        with_us: list[float] = []
        without_us: list[float] = []
        ratios: list[float] = []
        deadline = Deadline(150)
        clock = time.perf_counter
        for round_no in range(max(5, args.audit_rounds)):
            if round_no >= 5 and deadline.passed():
                break
            timings: dict[bool, list[float]] = {True: [], False: []}
            # Requests alternate one by one between the phases, so that whatever else the
            # machine is doing falls on both alike; the first phase alternates per round.
            for i in range(2 * args.audit_requests):
                audited = (i + round_no) % 2 == 0
                gateway.access.record_event = original if audited else _no_record
                path = paths[(i // 2) % len(paths)]
                try:
                    began = clock()
                    response = client.get(path, headers=headers)
                    timings[audited].append((clock() - began) * 1e6)
                finally:
                    gateway.access.record_event = original
                if response.status_code != 200:
                    raise RuntimeError(f"GET {path}: {response.status_code}")
            with_us.append(median(timings[True]))
            without_us.append(median(timings[False]))
            ratios.append(with_us[-1] / without_us[-1])
    ratio = median(ratios)
    table.add(BACKEND_LABEL[backend], f"{read.agency} {read.level}, {len(paths)} subjects",
              f"{median(with_us):,.0f}", spread(with_us), f"{median(without_us):,.0f}",
              spread(without_us), f"{ratio:.3f} (+{(ratio - 1) * 100:.1f} %)",
              f"{len(ratios)}")
    return ratio


def _no_record(session: Session, event: AuditEvent) -> None:
    return None


# --- 2 and 3. sealing, export and verification ---------------------------------------------


def realistic_event(rng: random.Random, subjects: list[str], when: datetime) -> AuditEvent:
    """An event shaped like the gateway's own: mostly single reads, some list pages."""
    agency, _, client, purpose, agreement, grant = rng.choices(CALLERS, CALLER_WEIGHTS)[0]
    is_list = rng.random() < 0.2
    touched = rng.sample(subjects, rng.randint(2, 50)) if is_list else [rng.choice(subjects)]
    denied = rng.random() < 0.05
    return AuditEvent(
        event_id=f"{rng.getrandbits(128):032x}",
        kind=EventKind.API_ACCESS,
        time=when,
        request_id=f"{rng.getrandbits(64):016x}",
        client_id=client,
        agency=agency,
        purpose=purpose,
        method="GET",
        route="/api/v1/subjects" if is_list else "/api/v1/subjects/<string:ref>",
        action="list" if is_list else "read",
        resource_type="subject",
        subject_ids=tuple(touched),  # a refused read still names whom it asked for
        agreement=None if denied else agreement,
        grant=None if denied else grant,
        disclosure_level=None if denied else "identified",
        fields=() if denied else SUBJECT_FIELDS,
        decision="deny" if denied else "permit",
        reason="no_agreement" if denied else "ok",
        status=404 if denied else 200,
        duration_us=rng.randint(800, 6000),
        details={"limit": "50"} if is_list else {},
    )


def subject_pool(rng: random.Random, count: int) -> list[str]:
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(count)]


def _seal_and_verify(backend: str, tmp: Path, args: argparse.Namespace, sealing: Table,
                     verifying: Table, stages: list[Table]) -> tuple[float, float, float]:
    label = BACKEND_LABEL[backend]
    config = Config()
    private_key = Ed25519PrivateKey.generate()
    signer = CheckpointSigner(KEY_NAME, private_key)
    rng = random.Random(4)
    subjects = subject_pool(rng, args.subjects)
    total = args.seal_events
    with throwaway_database(backend, tmp) as url:
        upgrade(url)
        engine = make_engine(url)  # the gateway's engine set-up (WAL, BEGIN IMMEDIATE, pool)
        try:
            start = datetime.now(UTC) - timedelta(days=1)
            threads = 1 if backend == "sqlite" else 2  # SQLite has one writer at a time
            recording = 0.0
            done = 0
            while done < total:  # 10 batches of 500 at a time, built before the clock starts
                group = [[realistic_event(rng, subjects, start + timedelta(milliseconds=n))
                          for n in range(first, min(first + 500, total))]
                         for first in range(done, min(done + 5000, total), 500)]
                recording += _record(engine, group, threads)
                done += sum(len(batch) for batch in group)

            sealed, calls, checkpoints = 0, 0, 0
            deadline = Deadline(600)
            began = time.perf_counter()
            while calls < total // 5000 + 20 and not deadline.passed():
                with Session(engine) as session:
                    result = seal_pending_events(
                        session, signer, origin=ORIGIN, now=datetime.now(UTC),
                        batch_size=5000,
                        checkpoint_every_events=config.audit_checkpoint_every_events,
                        checkpoint_every_seconds=config.audit_checkpoint_every_seconds,
                        gap_grace_seconds=config.audit_gap_grace_seconds,
                    )
                    session.commit()
                calls += 1
                sealed += result.sealed
                checkpoints += result.checkpoint is not None
                if not result.more_pending:
                    break
            sealing_seconds = time.perf_counter() - began
            if sealed != total:
                raise RuntimeError(f"sealed {sealed} of {total} events")
            with Session(engine) as session:  # a final checkpoint over everything (untimed)
                seal_pending_events(session, signer, origin=ORIGIN,
                                    now=datetime.now(UTC) + timedelta(seconds=10))
                session.commit()
            seal_rate = per_second(total, sealing_seconds)
            sealing.add(label, f"{fmt_rate(per_second(total, recording))} ({recording:.1f} s, "
                               f"{threads} writer{'s' if threads > 1 else ''})",
                        f"{fmt_rate(seal_rate)} ({sealing_seconds:.1f} s)", calls, checkpoints)
            rates = _export_and_verify(engine, tmp, private_key, total, label, verifying,
                                       stages)
        finally:
            engine.dispose()
    return seal_rate, *rates


def _record(engine: sa.Engine, batches: list[list[AuditEvent]], threads: int) -> float:
    """Record every batch with record_event in its own committed transaction; wall seconds."""

    def write(batch: list[AuditEvent]) -> None:
        with Session(engine) as session:
            for event in batch:
                record_event(session, event)
            session.commit()

    began = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(write, batches))
    return time.perf_counter() - began


def _export_and_verify(engine: sa.Engine, tmp: Path, private_key: Ed25519PrivateKey,
                       total: int, label: str, table: Table, stages: list[Table]
                       ) -> tuple[float, float]:
    """Export, then verify: 3 rounds on the first backend, 1 on the next (the same code over
    the same kind of file; the second export is verified as a cross-check)."""
    rounds = 1 if stages else 3
    export, checkpoint_file, key_file = tmp / "export.jsonl", tmp / "cp.json", tmp / "key.pem"
    key_file.write_bytes(public_key_pem(private_key.public_key()))
    with Session(engine) as session:
        note = query.latest_checkpoint(session).note
    checkpoint_file.write_text(note)
    checkpoint = read_checkpoint(note, private_key.public_key(), KEY_NAME)
    if checkpoint.tree_size != total:
        raise RuntimeError(f"latest checkpoint covers {checkpoint.tree_size} of {total}")
    with Session(engine) as session, export.open("w", encoding="utf-8") as out:
        began = time.perf_counter()
        count = query.write_export(session, out)
        export_time = time.perf_counter() - began
    if count != total:
        raise RuntimeError(f"exported {count} of {total} events")
    verify_times, sha_file, sha_line = [], [], []
    for _ in range(rounds):
        with export.open(encoding="utf-8") as lines:
            began = time.perf_counter()
            verify_export(iter(lines), checkpoint)
            verify_times.append(time.perf_counter() - began)
        sha_file.append(_sha256_file(export))
        sha_line.append(_sha256_lines(export))
    command = [sys.executable, "-m", "audit.verify", "--events", str(export), "--checkpoint",
               str(checkpoint_file), "--public-key", str(key_file), "--key-name", KEY_NAME]
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    cli_time = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"audit.verify failed: {done.stdout} {done.stderr}")
    size = export.stat().st_size
    verify_rate = per_second(total, median(verify_times))
    cli_rate = per_second(total, cli_time)
    line_rate = per_second(total, median(sha_line))
    table.add(label, fmt_rate(per_second(total, export_time)), f"{size / 2**20:.0f} MiB",
              fmt_rate(verify_rate), fmt_rate(cli_rate),
              fmt_rate(per_second(total, median(sha_file))), fmt_rate(line_rate),
              f"{verify_rate / line_rate:.3f}")
    if not stages:
        stages.append(_verify_profile(export, checkpoint))
    export.unlink()
    return verify_rate, cli_rate


def _verify_profile(export: Path, checkpoint: Checkpoint) -> Table:
    """Where verify_export spends its time: one extra pass under pyinstrument."""
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.001)
    with export.open(encoding="utf-8") as lines:
        profiler.start()
        try:
            verify_export(iter(lines), checkpoint)
        finally:
            profiler.stop()
    return top_self_table(profiler.last_session, ROOT,
                          "Where verify_export spends its time (pyinstrument, one pass over the "
                          "first backend's export, top 8 by self time)")


def _sha256_file(path: Path) -> float:
    began = time.perf_counter()
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return time.perf_counter() - began


def _sha256_lines(path: Path) -> float:
    began = time.perf_counter()
    with path.open("rb") as handle:
        for line in handle:
            hashlib.sha256(line).digest()
    return time.perf_counter() - began


# --- 4. subject-access query over a large log ----------------------------------------------

EVENT_COLUMNS = ("id", "event_id", "kind", "time", "agency", "client_id", "purpose", "decision",
                 "agreement", "action", "resource_type", "status", "body")
SUBJECT_COLUMNS = ("event_row_id", "subject_id")


@dataclass
class Chunk:
    events: list[tuple]
    subjects: list[tuple[int, str]]


def generate_access_log(total: int, subjects: list[str], rng: random.Random, seen: Counter,
                        chunk_size: int = 50_000) -> Iterator[Chunk]:
    """Event and subject rows in id order, `chunk_size` events at a time (times as naive UTC
    datetimes); `seen` counts the events of each subject.

    Reads pick a subject by Zipf-like popularity (a few people are looked up far more often);
    list pages take a run of consecutive subjects in id order, as the list endpoint pages.
    """
    popular = subjects[:]
    rng.shuffle(popular)
    cumulative = list(accumulate(1 / (rank + 1) ** 0.8 for rank in range(len(subjects))))
    ordered = sorted(subjects)
    when = datetime(2025, 1, 1)
    step = timedelta(days=365) / total
    for first in range(1, total + 1, chunk_size):
        events, rows = [], []
        for row_id in range(first, min(first + chunk_size, total + 1)):
            agency, _, client, purpose, agreement, _ = rng.choices(
                CALLERS, cum_weights=CALLER_CUMULATIVE)[0]
            if rng.random() < 0.2:
                action, offset = "list", rng.randrange(len(ordered))
                touched = ordered[offset:offset + rng.randint(2, 50)]
            else:
                action, touched = "read", rng.choices(popular, cum_weights=cumulative)
            denied = rng.random() < 0.05
            decision = "deny" if denied else "permit"
            when += step
            body = (f'{{"action":"{action}","agency":"{agency}","decision":"{decision}",'
                    f'"purpose":"{purpose}","row":{row_id}}}')
            events.append((row_id, f"{row_id:032x}", "api.access", when, agency, client,
                           purpose, decision, None if denied else agreement, action, "subject",
                           404 if denied else 200, body))
            rows.extend((row_id, s) for s in touched)
            seen.update(touched)
        yield Chunk(events, rows)


def _insert_sqlite(engine: sa.Engine, chunks: Iterator[Chunk]) -> int:
    events_sql = (f"INSERT INTO audit_events ({', '.join(EVENT_COLUMNS)}) "
                  f"VALUES ({', '.join('?' for _ in EVENT_COLUMNS)})")
    subjects_sql = "INSERT INTO audit_event_subjects (event_row_id, subject_id) VALUES (?, ?)"
    count = 0
    raw = engine.raw_connection()
    try:
        raw.execute("PRAGMA foreign_keys=OFF")  # consistent by construction; see the note
        for chunk in chunks:
            cursor = raw.cursor()
            cursor.execute("BEGIN")
            # SQLAlchemy's SQLite DateTime storage format, UTC without offset.
            cursor.executemany(events_sql, [
                (*e[:3], e[3].isoformat(" ", "microseconds"), *e[4:]) for e in chunk.events
            ])
            cursor.executemany(subjects_sql, chunk.subjects)
            cursor.execute("COMMIT")
            cursor.close()
            count += len(chunk.subjects)
    finally:
        raw.execute("PRAGMA foreign_keys=ON")
        raw.close()
    return count


def _copy_text(rows: list[tuple]) -> str:
    return "".join(
        "\t".join(r"\N" if v is None else str(v) for v in row) + "\n" for row in rows
    )


def _insert_postgres(engine: sa.Engine, chunks: Iterator[Chunk]) -> int:
    count = 0
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        # Skip the foreign-key triggers for this session only (rows consistent by construction).
        cursor.execute("SET session_replication_role = replica")
        for chunk in chunks:
            events = [(*e[:3], e[3].isoformat(" ", "microseconds") + "+00", *e[4:])
                      for e in chunk.events]
            with cursor.copy(f"COPY audit_events ({', '.join(EVENT_COLUMNS)}) FROM STDIN") as cp:
                cp.write(_copy_text(events))
            with cursor.copy("COPY audit_event_subjects (event_row_id, subject_id) "
                             "FROM STDIN") as cp:
                cp.write(_copy_text(chunk.subjects))
            raw.commit()
            count += len(chunk.subjects)
        cursor.execute("SELECT setval('audit_events_id_seq', (SELECT max(id) FROM audit_events))")
        cursor.execute("SET session_replication_role = DEFAULT")
        raw.commit()
    finally:
        raw.close()
    return count


def drop_secondary_indexes(engine: sa.Engine, tables: tuple[str, ...]) -> list[str]:
    """Drop the indexes of `tables` that back no constraint; returns their CREATE statements.

    Bulk loading into bare tables and indexing afterwards is how large loads are done; the
    statements come from the database itself, so the indexes rebuilt are the gateway's own.
    """
    names = ", ".join(f"'{t}'" for t in tables)
    if engine.dialect.name == "sqlite":
        found = f"SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL " \
                f"AND tbl_name IN ({names})"
    else:
        found = ("SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) "
                 "FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
                 f"WHERE c.relname IN ({names}) AND NOT EXISTS "
                 "(SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)")
    with engine.begin() as conn:
        indexes = conn.execute(sa.text(found)).all()
        for name, _ in indexes:
            conn.exec_driver_sql(f'DROP INDEX "{name}"')
    return [create for _, create in indexes]


def _subject_access(backend: str, tmp: Path, args: argparse.Namespace, table: Table) -> float:
    rng = random.Random(9162)
    subjects = subject_pool(rng, args.subjects)
    with throwaway_database(backend, tmp) as url:
        upgrade(url)
        engine = make_engine(url)
        try:
            seen: Counter[str] = Counter()
            chunks = generate_access_log(args.access_events, subjects, rng, seen)
            began = time.perf_counter()
            indexes = drop_secondary_indexes(engine, ("audit_events", "audit_event_subjects"))
            insert = _insert_sqlite if backend == "sqlite" else _insert_postgres
            subject_rows = insert(engine, chunks)
            loaded = time.perf_counter() - began
            with engine.begin() as conn:
                for create in indexes:
                    conn.exec_driver_sql(create)
            generated = time.perf_counter() - began
            began = time.perf_counter()
            if backend == "sqlite":
                with engine.begin() as conn:
                    conn.exec_driver_sql("ANALYZE")
            else:
                with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                    conn.exec_driver_sql("VACUUM ANALYZE audit_events")
                    conn.exec_driver_sql("VACUUM ANALYZE audit_event_subjects")
            analysed = time.perf_counter() - began

            with Session(engine) as session:
                for subject in rng.sample(subjects, 3):  # warm-up
                    query.subject_accesses(session, subject)
                times = []
                for subject in rng.sample(subjects, args.access_queries):
                    began = time.perf_counter()
                    query.subject_accesses(session, subject)
                    times.append(time.perf_counter() - began)
                [(hottest, hot_events)] = seen.most_common(1)
                began = time.perf_counter()
                query.subject_accesses(session, hottest)
                hot_time = time.perf_counter() - began
                session.rollback()
        finally:
            engine.dispose()
    table.add(BACKEND_LABEL[backend],
              f"{generated:.1f} s ({fmt_rate(per_second(args.access_events, generated))} events;"
              f" load {loaded:.1f} s + indexes {generated - loaded:.1f} s)",
              f"{subject_rows:,}", f"{analysed:.1f} s", f"{median(times) * 1000:.1f} ms",
              f"{max(times) * 1000:.1f} ms", f"{hot_time * 1000:.1f} ms ({hot_events:,})")
    return median(times)
