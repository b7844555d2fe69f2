"""The database goes away under load and comes back: the gateway fails closed, then recovers.

A loopback TCP proxy sits between a gunicorn-served gateway and PostgreSQL. Mid-load the
proxy drops every open database connection and refuses new ones for about two seconds.
Clients keep reading subjects and creating referrals (each with its own Idempotency-Key,
retried until it succeeds). Every answer must be a 2xx or a 503 problem, no request may
hang, the service must answer again by itself, and afterwards the database must hold exactly
the referrals the clients were told about, an audit event for every 2xx, and a log that
seals and verifies. The real PostgreSQL service is never touched.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tests.databases import postgres_server_url, throwaway_database
from tests.server import Gateway, call

pytestmark = pytest.mark.server

PRE_CJ = "pre-cj-referral"
IOM = "iom-case-management"
PROBLEM = "application/problem+json"

LOAD_SECONDS = 6.0
CUT_AFTER = 1.5
OUTAGE_SECONDS = 2.0
RECOVERY_SECONDS = 5.0  # the service answers 200 again by itself within this after restore
CLIENT_TIMEOUT = 10.0  # no request may take this long (a hang shows as a client timeout)
RETRY_DEADLINE = 15.0  # after restore, a pending referral must have succeeded by then
TEST_BUDGET = 90.0


class DatabaseProxy:
    """A loopback TCP relay to the database that can be cut and restored.

    `cut()` shuts down every relayed connection (both sides see EOF, so PostgreSQL rolls
    back whatever was open) and accepts new connections only to close them at once;
    `restore()` relays again.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.listener.settimeout(0.2)
        self.port: int = self.listener.getsockname()[1]
        self.cut_connections = 0
        self.refused_connections = 0
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._relaying = threading.Event()
        self._relaying.set()
        self._stopped = threading.Event()
        self._acceptor = threading.Thread(target=self._accept, name="db-proxy", daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # listener closed
            if not self._relaying.is_set():
                self.refused_connections += 1
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=2)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._open |= {client, server}
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                _shutdown(sock)
            with self._lock:
                for sock in (source, sink):
                    if sock in self._open:
                        self._open.discard(sock)
                        sock.close()

    def cut(self) -> None:
        self._relaying.clear()
        with self._lock:
            victims = list(self._open)
        self.cut_connections += len(victims) // 2
        for sock in victims:
            _shutdown(sock)  # wakes the pumps, which close both ends

    def restore(self) -> None:
        self._relaying.set()

    def close(self) -> None:
        self._stopped.set()
        self.cut()
        self.listener.close()
        self._acceptor.join(timeout=5)


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


@dataclass
class Answer:
    """One HTTP exchange as a client saw it."""

    kind: str  # "read" | "write"
    request_id: str
    started: float
    ended: float
    status: int | None = None  # None: no HTTP answer at all (connection error or timeout)
    content_type: str = ""
    body: dict = field(default_factory=dict)
    error: str | None = None
    key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)  # names in lower case

    @property
    def echoed_id(self) -> str | None:
        return self.headers.get("x-request-id")

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def exchange(
    kind: str,
    url: str,
    headers: dict[str, str],
    request_id: str,
    *,
    data: bytes | None = None,
    key: str | None = None,
) -> Answer:
    headers = {**headers, "X-Request-ID": request_id}
    if key is not None:
        headers["Idempotency-Key"] = key
    started = time.monotonic()
    try:
        status, response_headers, body = call(
            url, data=data, headers=headers, timeout=CLIENT_TIMEOUT
        )
    except (OSError, ValueError) as error:  # TimeoutError is a hung request; ValueError: no JSON
        return Answer(kind, request_id, started, time.monotonic(), error=repr(error), key=key)
    lowered = {name.lower(): value for name, value in response_headers.items()}
    return Answer(
        kind,
        request_id,
        started,
        time.monotonic(),
        status=status,
        content_type=lowered.get("content-type", "").split(";")[0].strip(),
        body=body,
        key=key,
        headers=lowered,
    )


def referral_body(subject_ref: str) -> bytes:
    return json.dumps(
        {
            "subject_ref": subject_ref,
            "to_agency": "VSP-MENTOR",
            "service": "peer_mentoring",
            "pathways": ["ete", "attitudes"],
            "reasons": ["prolific_offending", "peer_influence"],
            "summary": "Reliability test referral.",
            "urgency": "routine",
            "share_risk": ["reoffending"],
            "consent": {"status": "pending"},
        }
    ).encode()


def log_tail(path: Path, lines: int = 60) -> str:
    if not path.exists():
        return "(no gunicorn log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def test_database_outage_fails_closed_and_recovers(tmp_path):
    began = time.monotonic()
    server_url = postgres_server_url()
    if server_url is None:
        pytest.skip(
            "needs PostgreSQL (TEST_DATABASE_URL or postgres@127.0.0.1:5432): the outage is "
            "injected with a TCP proxy in front of a database server"
        )
    with throwaway_database("postgresql", tmp_path) as direct_url:
        direct = make_url(direct_url)
        proxy = DatabaseProxy((direct.host or "127.0.0.1", direct.port or 5432))
        proxied_url = direct.set(host="127.0.0.1", port=proxy.port).render_as_string(
            hide_password=False
        )
        gunicorn_log = tmp_path / "gunicorn.log"
        # Migrate, load the demo and later seal/verify straight to PostgreSQL; serve via proxy.
        setup = Gateway(direct_url, tmp_path)
        gateway = Gateway(
            proxied_url,
            tmp_path,
            workers=3,
            extra_env={
                "GATEWAY_AUDIT_SEAL_IN_PROCESS": "1",
                "GUNICORN_CMD_ARGS": f"--error-logfile {gunicorn_log} --capture-output",
            },
        )
        engine = sa.create_engine(direct_url)
        try:
            setup.prepare()
            gateway.start()
            report = run_outage(gateway, proxy, engine, gunicorn_log)
        finally:
            gateway.stop()
            proxy.close()
            engine.dispose()

        sealed = setup.cli("audit", "seal", "--once")
        assert sealed.returncode == 0, sealed.stdout + sealed.stderr
        verified = setup.cli("audit", "verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr

    elapsed = time.monotonic() - began
    print(
        "\n[database away] "
        f"requests made: {report['requests']} ({report['reads']} reads, {report['writes']} "
        f"write attempts, {report['referrals']} referrals created), "
        f"503s during the outage: {report['outage_503s']}, "
        f"failures injected: 1 outage of {OUTAGE_SECONDS:.0f}s "
        f"({proxy.cut_connections} connections cut, {proxy.refused_connections} refused), "
        f"recovered after {report['recovery']:.2f}s, slowest answer {report['slowest']:.2f}s, "
        f"referrals created on a retry: {report['retried']}, "
        f"503s for a committed request: {report['committed_unanswered']}, "
        f"events verified: {report['events_verified']}, "
        f"records lost: {report['lost']}, duplicates: {report['duplicates']}; "
        f"seal: {sealed.stdout.strip()}; verify: {verified.stdout.strip()}; "
        f"test took {elapsed:.1f}s"
    )
    assert elapsed < TEST_BUDGET


def run_outage(gateway: Gateway, proxy: DatabaseProxy, engine: sa.Engine, log: Path) -> dict:
    reader = gateway.headers("WMP", IOM)
    writer = {**reader, "X-Purpose": PRE_CJ}
    subjects_url = gateway.base + "/api/v1/subjects?limit=5"
    referrals_url = gateway.base + "/api/v1/referrals"
    run = uuid.uuid4().hex[:6]

    listing = exchange("read", subjects_url, reader, f"dbaway-{run}-list")
    assert listing.status == 200, listing
    with engine.connect() as conn:
        before = set(conn.scalars(sa.text("SELECT id FROM referrals")))

    # A subject WMP may refer to the mentoring service (the first one it lists, normally).
    answers: list[Answer] = []
    body = None
    for n, item in enumerate(listing.body["items"]):
        candidate = referral_body(item["ref"])
        probe = exchange(
            "write",
            referrals_url,
            writer,
            f"dbaway-{run}-probe{n}",
            data=candidate,
            key=f"dbaway-{run}-probe{n}",
        )
        if probe.status == 201:
            answers.append(probe)
            body = candidate
            break
    assert body is not None, "no listed subject can be referred to VSP-MENTOR"

    lock = threading.Lock()
    start = time.monotonic()
    load_ends = start + LOAD_SECONDS
    outage: dict[str, float] = {}

    def record(answer: Answer) -> None:
        with lock:
            answers.append(answer)

    def read_loop(n: int) -> None:
        i = 0
        while time.monotonic() < load_ends:
            record(exchange("read", subjects_url, reader, f"dbaway-{run}-r{n}-{i}"))
            i += 1

    def write_loop(n: int) -> None:
        k = 0
        while time.monotonic() < load_ends:
            key = f"dbaway-{run}-w{n}-{k}"
            attempt = 0
            while True:
                answer = exchange(
                    "write",
                    referrals_url,
                    writer,
                    f"{key}-a{attempt}",
                    data=body,
                    key=key,
                )
                record(answer)
                if answer.status != 503 and answer.status is not None:
                    break  # 201, or an unexpected answer the assertions will report
                if time.monotonic() > outage.get("restored", load_ends) + RETRY_DEADLINE:
                    break
                attempt += 1
                time.sleep(0.1)
            k += 1

    threads = [threading.Thread(target=read_loop, args=(n,), daemon=True) for n in range(2)]
    threads += [threading.Thread(target=write_loop, args=(n,), daemon=True) for n in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(CUT_AFTER)
    outage["cut"] = time.monotonic()
    proxy.cut()
    time.sleep(OUTAGE_SECONDS)
    proxy.restore()
    outage["restored"] = time.monotonic()
    for thread in threads:
        thread.join(timeout=LOAD_SECONDS + RETRY_DEADLINE + CLIENT_TIMEOUT)
    assert not any(thread.is_alive() for thread in threads), "a client thread never finished"
    cut, restored = outage["cut"], outage["restored"]

    # The service answers by itself again (no restart): steady 200s after the outage.
    steady: list[Answer] = []
    for i in range(10):
        steady.append(exchange("read", subjects_url, reader, f"dbaway-{run}-after{i}"))
        if not steady[-1].ok:
            break  # reported below; one client timeout at most
    answers += steady
    context = f"\n--- gunicorn log (tail) ---\n{log_tail(log)}"

    # Never a 500, never a 4xx, never a hang or a dropped connection: 2xx or a 503 problem.
    no_answer = [a for a in answers if a.status is None]
    assert not no_answer, f"requests without an HTTP answer: {no_answer[:5]}{context}"
    wrong = [
        a
        for a in answers
        if not a.ok
        and not (a.status == 503 and a.content_type == PROBLEM and a.body.get("status") == 503)
    ]
    assert not wrong, f"answers that are neither 2xx nor a 503 problem: {wrong[:5]}{context}"
    # A refusal is labelled and not cached like any other answer (X-Request-ID, no-store).
    unlabelled = [
        a
        for a in answers
        if a.echoed_id != a.request_id or a.headers.get("cache-control") != "no-store"
    ]
    assert not unlabelled, (
        f"answers without X-Request-ID or no-store: {len(unlabelled)}, e.g. {unlabelled[:3]}"
    )
    slowest = max(a.ended - a.started for a in answers)
    assert slowest < CLIENT_TIMEOUT, slowest

    # Before the cut everything succeeded; the outage was seen; the service came back.
    assert all(a.ok for a in answers if a.ended < cut), "failures before the outage"
    outage_503s = [a for a in answers if a.status == 503]
    assert outage_503s, "the outage was not noticed: no 503 at all"
    assert all(a.ended >= cut and a.started <= restored + RECOVERY_SECONDS for a in outage_503s), (
        f"503s outside the outage window: "
        f"{[(a.request_id, a.started - cut, a.ended - cut) for a in outage_503s][:5]}{context}"
    )
    recovered = [a for a in answers if a.ok and a.started >= restored]
    assert recovered, "no successful answer after the database came back"
    recovery = min(a.ended for a in recovered) - restored
    assert recovery < RECOVERY_SECONDS, recovery
    assert all(a.ok for a in steady), [a for a in steady if not a.ok]

    # Every write key ended in exactly one referral, the same one on every 201 for that key.
    writes = [a for a in answers if a.kind == "write"]
    by_key: dict[str, set[str]] = {}
    for answer in writes:
        by_key.setdefault(answer.key or "", set())
        if answer.status == 201:
            by_key[answer.key or ""].add(answer.body["ref"])
    unfinished = sorted(key for key, refs in by_key.items() if not refs)
    assert not unfinished, f"referrals never created after the outage: {unfinished}{context}"
    split = {key: refs for key, refs in by_key.items() if len(refs) > 1}
    retried = sum(1 for a in writes if a.status == 201 and not a.request_id.endswith("-a0"))
    assert retried, "no referral was retried across the outage: the retry path went untested"
    seen = {ref for refs in by_key.values() for ref in refs}

    with engine.connect() as conn:
        new = set(conn.scalars(sa.text("SELECT id FROM referrals"))) - before
        transitions = dict(
            conn.execute(
                sa.text(
                    "SELECT referral_id, count(*) FROM referral_transitions "
                    "WHERE referral_id = ANY(:ids) GROUP BY referral_id"
                ),
                {"ids": sorted(new)},
            ).all()
        )
        claims = {
            key: (status, stored["ref"] if isinstance(stored, dict) else json.loads(stored)["ref"])
            for key, status, stored in conn.execute(
                sa.text("SELECT key, status, body FROM idempotent_requests WHERE key LIKE :prefix"),
                {"prefix": f"dbaway-{run}-%"},
            )
            if status != 0
        }
        half_claimed = conn.scalar(
            sa.text("SELECT count(*) FROM idempotent_requests WHERE key LIKE :p AND status = 0"),
            {"p": f"dbaway-{run}-%"},
        )
        events = [
            json.loads(text) for text in conn.scalars(sa.text("SELECT body FROM audit_events"))
        ]

    lost = seen - new
    extra = new - seen
    duplicates = len(extra) + sum(len(refs) - 1 for refs in split.values())
    assert not lost, f"referrals the clients got a 201 for are missing: {lost}"
    assert not extra, f"referrals nobody was told about (half-written or duplicated): {extra}"
    assert not split, f"one Idempotency-Key, several referrals: {split}"
    assert all(transitions.get(ref) == 1 for ref in new), transitions
    assert half_claimed == 0, "an idempotency claim was committed without its response"
    assert claims == {key: (201, next(iter(refs))) for key, refs in by_key.items()}, claims

    # Every 2xx a client saw has its audit event, recording the status that was sent.
    logged: dict[str, set[int]] = {}
    for event in events:
        logged.setdefault(event.get("request_id"), set()).add(event.get("status"))
    successes = [a for a in answers if a.ok]
    unaudited = [a.request_id for a in successes if a.status not in logged.get(a.request_id, ())]
    assert not unaudited, f"2xx answers without their audit event: {unaudited[:10]}"
    # Allowed, and reported: the commit reached PostgreSQL but its acknowledgement was cut, so
    # the client got a 503 for an access that is logged (a retry replays the same referral).
    committed_unanswered = sum(
        1 for a in answers if not a.ok and any(200 <= s < 300 for s in logged.get(a.request_id, ()))
    )

    return {
        "requests": len(answers),
        "reads": sum(a.kind == "read" for a in answers),
        "writes": len(writes),
        "referrals": len(seen),
        "outage_503s": len(outage_503s),
        "recovery": recovery,
        "slowest": slowest,
        "events_verified": len(successes),
        "lost": len(lost),
        "duplicates": duplicates,
        "retried": retried,
        "committed_unanswered": committed_unanswered,
    }
