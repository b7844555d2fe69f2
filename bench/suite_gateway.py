"""Suite `gateway` (issue 8): one full gateway read of a subject under gunicorn on loopback,
driven by wrk, against a bare Flask + SQLAlchemy endpoint (bench/bare_app.py) on the same
database with the same gunicorn set-up, rounds interleaved; then a pyinstrument profile of the
same read in-process, to show what dominates.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from flask.testing import FlaskClient

from bench import bare_app, floor_app
from bench.common import (
    BACKEND_LABEL,
    BENCH_DIR,
    ROOT,
    Deadline,
    Section,
    Table,
    available_backends,
    ensure_module,
    ensure_wrk,
    free_port,
    median,
    spread,
    verdict,
)
from bench.profile import profile_tables
from bench.world import Read, World, choose_read, demo_world, get_each, get_many
from tests.sql import statements_sent

TARGET = 0.6  # gateway >= 0.6 x bare requests/s
LUA = BENCH_DIR / "wrk_read.lua"
EXTRA_AGREEMENT = BENCH_DIR / "agreements" / "bench-area-profile.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("gateway suite")
    group.add_argument("--workers", type=int, default=os.cpu_count() or 2,
                       help="gunicorn sync workers, for both apps (default: nproc)")
    group.add_argument("--connections", type=int, default=0,
                       help="wrk connections (default: 2 x workers)")
    group.add_argument("--duration", type=float, default=3.0, help="seconds per wrk round")
    group.add_argument("--rounds", type=int, default=5, help="wrk rounds per app")
    group.add_argument("--seal-in-process", choices=("0", "1"), default="1",
                       help="GATEWAY_AUDIT_SEAL_IN_PROCESS for the gateway (1: the shipped "
                            "default, a sealer thread per worker)")
    group.add_argument("--profile-requests", type=int, default=1500,
                       help="requests profiled in-process with pyinstrument")


def run(args: argparse.Namespace) -> Section:
    wrk = ensure_wrk()
    ensure_module("pyinstrument", "pyinstrument")
    section = Section("gateway")
    backends, skipped = available_backends(args.backends)
    section.notes += skipped
    connections = args.connections or 2 * args.workers
    targets = Table("Target (issue 8)", ["measure", "target", "backend", "figure", "result"])
    load = Table(
        f"GET one subject under gunicorn ({args.workers} sync workers, 127.0.0.1), wrk 1 thread "
        f"x {connections} connections, {args.rounds} rounds x {args.duration:g} s per app, "
        "interleaved (medians)",
        ["backend", "app", "requests/s", "rounds (req/s)", "p50", "p99", "non-2xx",
         "CPU us/request", "x / bare (req/s)", "x / bare (CPU)"],
    )
    in_process = Table(
        "The same reads in-process, one thread, no gunicorn (Flask test client, 5 interleaved "
        "rounds x 100 requests per endpoint; median of the rounds' median latencies)",
        ["backend", "endpoint", "us/request", "round medians", "x bare", "bare / this",
         "SQL statements/request", "WAL written/request"],
    )
    section.tables += [targets, load, in_process]
    for backend in backends:
        label = BACKEND_LABEL[backend]
        with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp, \
                demo_world(backend, Path(tmp) / "world", subjects=args.subjects) as world:
            read = choose_read(world)
            results = _load(world, read, wrk, args, connections, Path(tmp))
            bare_rps = median([r.rps for r in results["bare"]])
            bare_cpu = median([r.worker_cpu_us + r.database_cpu_us for r in results["bare"]])
            # Each round against the bare round next to it in time, so that the machine's
            # drift (other tenants) hits both sides of each ratio alike.
            paired = {app: [mine.rps / bare.rps
                            for mine, bare in zip(results[app], results["bare"], strict=True)]
                      for app in ("gateway", "floor")}
            ratio = median(paired["gateway"])
            for app in ("gateway", "floor", "bare", "single"):
                rounds = results.get(app)
                if not rounds:
                    continue
                rps = median([r.rps for r in rounds])
                cpu = median([r.worker_cpu_us + r.database_cpu_us for r in rounds])
                cpu_figure = f"{cpu:,.0f}"
                if world.backend == "postgresql":
                    cpu_figure += f" ({median([r.database_cpu_us for r in rounds]):,.0f} db)"
                rps_ratio = cpu_ratio = ""
                if app in paired:
                    rps_ratio = (f"{median(paired[app]):.2f} "
                                 f"({min(paired[app]):.2f}-{max(paired[app]):.2f})")
                elif app == "single":
                    rps_ratio = f"{rps / bare_rps:.2f}"
                if app != "bare":
                    cpu_ratio = f"{bare_cpu / cpu:.2f}"
                load.add(label, _app_label(app, read), f"{rps:,.0f}",
                         spread([r.rps for r in rounds]),
                         f"{median([r.p50_ms for r in rounds]):.1f} ms",
                         f"{median([r.p99_ms for r in rounds]):.1f} ms",
                         sum(r.non2xx for r in rounds), cpu_figure, rps_ratio, cpu_ratio)
            targets.add("gateway requests/s vs bare Flask + SQLAlchemy", ">= 0.6 x", label,
                        f"{ratio:.2f} x", verdict(ratio >= TARGET))
            floor = median(paired["floor"])
            targets.add("for reference: the floor (bare + the mandated layers, no gateway "
                        "logic) vs bare", "-", label, f"{floor:.2f} x",
                        "the floor itself reaches 0.6 x" if floor >= TARGET else
                        "the floor itself is below 0.6 x")
            section.notes.append(f"{label}: {read.why}; {results['audit_note']}")
            profiled = _profile(world, read, args.profile_requests, label)
            section.tables += profiled
            _in_process(world, read, label, in_process)
    load.notes += [
        "Gateway: token check (ES256 at+jwt, verified-signature cache), revocation and client "
        "lookup (one query), purpose, agreement decision, load (one query: the subject with "
        "its collections as JSON aggregates), disclosure, marshmallow serialisation, one "
        "audit event (+ subject rows) committed before the response, after the reads (on "
        "SQLite in a short write transaction, on PostgreSQL as one autocommit statement), "
        f"GATEWAY_AUDIT_SEAL_IN_PROCESS={args.seal_in_process}. Bare: bench/bare_app.py, one "
        "SELECT of the subject row and one INSERT, committed.",
        "The floor (bench/floor_app.py): the bare endpoint's read of the same row plus what "
        "every gateway read pays whatever else it does: Flask-Limiter, the gateway's own "
        "bearer check (authlib, ES256, and the revocation and client-standing query), "
        "flask-smorest with a marshmallow schema, and one audit event (the gateway's "
        "`record_event`) committed in place of the bare endpoint's row. No purpose check, "
        "no relations, no decision, no disclosure. Its events are sealed by the gateway's "
        "sealer threads (the three servers run side by side), whose CPU counts as the "
        "gateway's.",
        "gunicorn sync workers close the connection after every response, so wrk reconnects "
        "for every request against every app alike.",
        "x / bare (req/s): the median of the per-round ratios, each gateway or floor round "
        "against the bare round run next to it (their range in brackets). CPU us/request: "
        "the CPU time of the app's gunicorn workers per request served, plus on PostgreSQL "
        "that of the database server's processes (in brackets); x / bare (CPU) is the "
        "bare endpoint's CPU per request over this app's.",
        "SQLite only: the gateway is also run on a single worker with the same connections, "
        "to show whether a second worker helps or hurts (the target compares equal workers).",
    ]
    in_process.notes.append(
        "The pseudonymised read loads bench/agreements/bench-area-profile.yaml (providers may "
        "read Birmingham subjects pseudonymised) into the world after the load test; each such "
        "read resolves its pseudonym in pseudonym_index (indexed when it was handed out) and "
        "writes no index row. The endpoints take turns by "
        "blocks of 100, not request by request: on SQLite every switch between the two apps' "
        "connections would throw away each connection's page cache.")
    return section


def _app_label(app: str, read: Read) -> str:
    if app == "bare":
        return "bare Flask + SQLAlchemy (read 1 row, insert 1 row)"
    if app == "single":
        return "the same gateway on 1 worker (3 rounds, after the others)"
    if app == "floor":
        return ("the floor: bare + Flask-Limiter, bearer token, smorest/marshmallow, "
                "audit event instead of the bare row")
    return f"gateway GET /api/v1/subjects/{{ref}} as {read.agency} ({read.level})"


# --- the load test ---------------------------------------------------------------------------


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    non2xx: int
    requests: int
    worker_cpu_us: float = 0.0  # the app's gunicorn workers, per request
    database_cpu_us: float = 0.0  # PostgreSQL's server processes, per request (0: SQLite)


@dataclass
class Server:
    name: str
    command: list[str]
    env: dict[str, str]
    port: int
    log: Path
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(self.command, env=self.env, cwd=ROOT,
                                            stdout=subprocess.DEVNULL, stderr=log)
        deadline = Deadline(60)
        while not deadline.passed():
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=2) as response:
                    if response.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer /healthz within 60 s")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def gunicorn(app: str, port: int, workers: int) -> list[str]:
    return [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers",
            str(workers), "--worker-class", "sync", "--log-level", "warning",
            "--graceful-timeout", "5", app]


def run_wrk(wrk: str, server: Server, paths: Sequence[str], headers: dict[str, str],
            seconds: float, connections: int) -> WrkResult:
    env = {**os.environ, "BENCH_PATHS": ",".join(paths),
           "BENCH_AUTHORIZATION": headers.get("Authorization", ""),
           "BENCH_PURPOSE": headers.get("X-Purpose", "")}
    command = [wrk, "-t", "1", "-c", str(connections), "-d", f"{seconds:g}s", "--timeout", "10s",
               "-s", str(LUA), server.base + "/"]
    done = subprocess.run(command, env=env, capture_output=True, text=True,
                          timeout=seconds + 60, check=False)
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout} {done.stderr}")
    data = json.loads(line.removeprefix("BENCH_JSON "))
    errors = data["connect_errors"] + data["read_errors"] + data["write_errors"]
    if data["non2xx"] > data["requests"] * 0.01 or errors > data["requests"] * 0.01:
        raise RuntimeError(f"{server.name}: too many failures under load: {data}; log: "
                           f"{server.log.read_text()[-2000:]}")
    return WrkResult(rps=data["requests"] / (data["duration_us"] / 1e6),
                     p50_ms=data["p50_us"] / 1000, p99_ms=data["p99_us"] / 1000,
                     non2xx=data["non2xx"], requests=data["requests"])


def cpu_seconds(pids: Sequence[str]) -> float:
    """User + system CPU time of these processes so far (from /proc; 0 for any gone)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime in clock ticks
    return total / os.sysconf("SC_CLK_TCK")


def _pids(*command: str) -> list[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False).stdout.split()


def measured_round(wrk: str, server: Server, paths: Sequence[str], headers: dict[str, str],
                   seconds: float, connections: int, backend: str) -> WrkResult:
    """One wrk round, with the CPU time the app's workers (and PostgreSQL's processes) spent
    on it per request: steadier than requests/s on a shared machine, and it shows where a
    throughput ratio comes from."""
    assert server.process is not None
    workers = _pids("pgrep", "-P", str(server.process.pid))
    database = _pids("pgrep", "-x", "postgres") if backend == "postgresql" else []
    before = cpu_seconds(workers), cpu_seconds(database)
    result = run_wrk(wrk, server, paths, headers, seconds, connections)
    after = cpu_seconds(workers), cpu_seconds(database)
    result.worker_cpu_us = (after[0] - before[0]) / result.requests * 1e6
    if database:
        result.database_cpu_us = (after[1] - before[1]) / result.requests * 1e6
    return result


def _check(server: Server, path: str, headers: dict[str, str]) -> None:
    request = urllib.request.Request(server.base + path, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        body = json.loads(response.read())
        if response.status != 200 or not body:
            raise RuntimeError(f"{server.name} {path}: {response.status} {body}")


def _load(world: World, read: Read, wrk: str, args: argparse.Namespace, connections: int,
          tmp: Path) -> dict:
    bare_app.create_tables(world.url)
    headers = {"Authorization": f"Bearer {world.token(read.agency)}", "X-Purpose": read.purpose}
    gateway_port, bare_port, floor_port = free_port(), free_port(), free_port()
    servers = {
        "gateway": Server("gateway", gunicorn("wsgi:app", gateway_port, args.workers),
                          world.server_env(GATEWAY_AUDIT_SEAL_IN_PROCESS=args.seal_in_process),
                          gateway_port, tmp / "gateway.log"),
        "bare": Server("bare", gunicorn("bench.bare_app:create_app()", bare_port, args.workers),
                       {**os.environ, "BENCH_DATABASE_URL": world.url, "PYTHONPATH": str(ROOT)},
                       bare_port, tmp / "bare.log"),
        "floor": Server("floor", gunicorn("bench.floor_app:create_app()", floor_port,
                                          args.workers),
                        world.server_env(BENCH_DATABASE_URL=world.url), floor_port,
                        tmp / "floor.log"),
    }
    bare_paths = [f"/subjects/{s}" for s in read.subject_ids]
    requests = {
        "gateway": (read.paths("/api/v1/subjects/"), headers),
        "bare": (bare_paths, {}),
        "floor": (bare_paths, headers),
    }
    results: dict = {"gateway": [], "bare": [], "floor": []}
    try:
        for server in servers.values():
            server.start()
        for name, server in servers.items():
            paths, hdrs = requests[name]
            _check(server, paths[0], hdrs)
            run_wrk(wrk, server, paths, hdrs, 2, connections)  # warm-up
        for round_no in range(args.rounds):
            # The bare rounds in the middle: each other round has one beside it to pair with.
            order = ("gateway", "bare", "floor") if round_no % 2 == 0 else (
                "floor", "bare", "gateway")
            for name in order:
                paths, hdrs = requests[name]
                results[name].append(measured_round(wrk, servers[name], paths, hdrs,
                                                    args.duration, connections, world.backend))
                time.sleep(1.0)  # let the gateway's sealer catch up before the next round
        if world.backend == "sqlite" and args.workers > 1:
            # Does the gateway scale with workers on SQLite? The same load on one worker.
            servers["gateway"].stop()
            port = free_port()
            single = servers["single"] = Server(
                "gateway, 1 worker", gunicorn("wsgi:app", port, 1),
                world.server_env(GATEWAY_AUDIT_SEAL_IN_PROCESS=args.seal_in_process), port,
                tmp / "gateway-1.log")
            single.start()
            paths, hdrs = requests["gateway"]
            run_wrk(wrk, single, paths, hdrs, 1, connections)  # warm-up
            results["single"] = [measured_round(wrk, single, paths, hdrs, args.duration,
                                                connections, world.backend)
                                 for _ in range(3)]
    finally:
        for server in servers.values():
            server.stop()
    with world.app.app_context():
        engine = world.app.extensions["gateway.db"].engine
        with engine.connect() as conn:
            events = conn.execute(sa.text("SELECT count(*) FROM audit_events")).scalar()
            sealed = conn.execute(sa.text("SELECT count(*) FROM audit_leaves")).scalar()
    served = sum(r.requests for r in results["gateway"])
    results["audit_note"] = (f"{events:,} audit events written in all ({served:,} in the timed "
                             f"gateway rounds), {sealed:,} sealed by the workers' sealers")
    return results


# --- in-process: profile, and the cost of a pseudonymised read ------------------------------


def _profile(world: World, read: Read, requests: int, label: str) -> list[Table]:
    from pyinstrument import Profiler

    client = world.app.test_client()
    headers = {"Authorization": f"Bearer {world.token(read.agency)}", "X-Purpose": read.purpose}
    paths = read.paths()
    get_many(client, paths, headers, 200)  # warm-up
    profiler = Profiler(interval=0.001)
    profiler.start()
    try:
        seconds = get_many(client, paths, headers, requests)
    finally:
        profiler.stop()
    return profile_tables(profiler.last_session, ROOT, label, requests, seconds)


def _in_process(world: World, identified: Read, label: str, table: Table) -> None:
    """Single-threaded cost per request, without gunicorn or lock contention: bare, the floor
    built up a layer at a time, gateway identified and (under the bench-only agreement)
    gateway pseudonymised, interleaved."""
    world.load_agreements([EXTRA_AGREEMENT])
    pseudonymised = choose_read(world)
    bare = bare_app.create_app(world.url)
    candidates: dict[str, tuple[FlaskClient, list[str], dict[str, str], sa.Engine]] = {
        "bare Flask + SQLAlchemy": (bare.test_client(),
                                    [f"/subjects/{s}" for s in identified.subject_ids], {},
                                    bare.extensions["bench.engine"]),
    }
    headers = {"Authorization": f"Bearer {world.token(identified.agency)}",
               "X-Purpose": identified.purpose}
    floors = [floor_app.create_app(world.url, floor_app.LAYERS[:n], world.app.config["GATEWAY"])
              for n in range(1, len(floor_app.LAYERS) + 1)]
    for floor in floors:
        layers = floor.extensions["bench.floor_layers"]
        name = "bare + " + ", ".join(layers) + (" (the floor)" if floor is floors[-1] else "")
        candidates[name] = (floor.test_client(), candidates["bare Flask + SQLAlchemy"][1],
                            headers, floor.extensions["bench.engine"])
    engine = world.app.extensions["gateway.db"].engine
    for read in (identified, pseudonymised):
        if read.level == "pseudonymised" or read is identified:
            headers = {"Authorization": f"Bearer {world.token(read.agency)}",
                       "X-Purpose": read.purpose}
            candidates[f"gateway, {read.agency} {read.level} ({read.purpose})"] = (
                world.app.test_client(), read.paths(), headers, engine)
    statements: dict[str, float] = {}
    wal: dict[str, str] = {}
    for name, (client, paths, headers, db) in candidates.items():
        get_many(client, paths, headers, 100)  # warm-up
        with statements_sent(db) as sent:
            get_many(client, paths, headers, 100)
        statements[name] = len(sent) / 100
        # 50 requests: SQLite checkpoints (and starts the log over) at 1,000 pages
        with _WalMeter(db) as meter:
            get_many(client, paths, headers, 50)
        wal[name] = meter.per_request(50)
    timings: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(5):
        for name, (client, paths, headers, _db) in candidates.items():
            timings[name].append(median(get_each(client, paths, headers, 100)))
    base = median(timings["bare Flask + SQLAlchemy"])
    for name in candidates:
        value = median(timings[name])
        table.add(label, name, f"{value:,.0f}", spread(timings[name]), f"{value / base:.2f}",
                  f"{base / value:.2f}", f"{statements[name]:.1f}", wal[name])
    if pseudonymised.level != "pseudonymised":
        table.add(label, "gateway pseudonymised: no grant allows one", *["-"] * 6)
    for app in (bare, *floors):
        app.extensions["bench.engine"].dispose()


class _WalMeter:
    """What the requests wrote to the write-ahead log: on SQLite in pages (a commit writes
    each page it changed, so this counts the tables and indexes a request touches), on
    PostgreSQL in bytes. Deterministic, unlike time on a shared machine."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.written = 0.0
        self.page_size = 0

    def _connect(self) -> sa.Connection:
        # Autocommit: a checkpoint cannot run inside the transaction the begin event opens.
        return self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")

    def _position(self) -> float:
        with self._connect() as conn:
            if self.engine.dialect.name == "postgresql":
                return float(conn.exec_driver_sql("SELECT pg_current_wal_lsn() - '0/0'").scalar())
            database = conn.exec_driver_sql("PRAGMA database_list").first()[2]
        wal = Path(database + "-wal")
        return wal.stat().st_size if wal.exists() else 0.0

    def __enter__(self) -> _WalMeter:
        if self.engine.dialect.name == "sqlite":
            with self._connect() as conn:  # start from an empty log
                busy, _, _ = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
                self.page_size = conn.exec_driver_sql("PRAGMA page_size").scalar_one()
            if busy:
                raise RuntimeError("the SQLite log could not be emptied: a reader is active")
        self.start = self._position()
        return self

    def __exit__(self, *exc: object) -> None:
        self.written = self._position() - self.start

    def per_request(self, requests: int) -> str:
        if self.engine.dialect.name == "postgresql":
            return f"{self.written / requests / 1024:.1f} KiB"
        frame = self.page_size + 24  # page + frame header; the log's own 32-byte header aside
        return f"{max(self.written - 32, 0) / frame / requests:.1f} pages"

