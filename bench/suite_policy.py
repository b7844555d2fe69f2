"""Suite `policy`: decisions per second of `policies.engine.decide` over the demo agreements with
the demo subjects' real record contexts, and `list_scope` per second.

The engine is pure, so this suite needs no server and one backend: the world is built on
SQLite only to obtain the compiled agreements and the record contexts the gateway would use.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from bench.common import Deadline, Section, Table, fmt_rate, median, spread
from bench.world import demo_world
from gateway import extensions
from gateway.models import Agency, Subject
from gateway.services.subjects import load_subjects, record_context
from policies.engine import PolicySet, RecordContext, compile_policy, decide, list_scope

# (agency, purpose, weight): who asks how often, each with the purpose its client declares.
MIX = (
    ("WMP", "iom-case-management", 30),
    ("NPS", "iom-case-management", 18),
    ("CRC", "iom-case-management", 14),
    ("YOT-BIR", "iom-case-management", 5),
    ("YOT-COV", "iom-case-management", 3),
    ("VSP-MENTOR", "pre-cj-referral", 8),
    ("VSP-HOUSING", "pre-cj-referral", 7),
    ("VSP-DVPP", "dv-perpetrator-programme", 5),
    ("LA-BIR", "performance-reporting", 2),
    ("IG-AUDIT", "ig-audit", 1),
)
ACTIONS = (("read", 80), ("list", 15), ("search", 5))
ROUND_SECONDS = 0.3

Request = tuple[str, str, str, str, RecordContext]  # agency, kind, action, purpose, record


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("policy suite")
    group.add_argument("--policy-requests", type=int, default=20_000,
                       help="decisions in the sampled workload")
    group.add_argument("--policy-rounds", type=int, default=5, help="rounds (median reported)")


def run(args: argparse.Namespace) -> Section:
    section = Section("policy")
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="bench-policy-") as tmp, \
            demo_world("sqlite", Path(tmp), subjects=args.subjects) as world, \
            world.app.app_context():
        session = extensions.database().session
        policy = extensions.agreements().current()
        kinds = dict(session.execute(sa.select(Agency.code, Agency.kind)).all())
        ids = session.scalars(sa.select(Subject.id).order_by(Subject.id)).all()
        contexts = [record_context(s, now.date(), purpose=None)  # any purpose: a decision mix
                    for s in load_subjects(session, ids).values()]
        session.rollback()
    rng = random.Random(68)
    callers = rng.choices([m[:2] for m in MIX], [m[2] for m in MIX], k=args.policy_requests)
    actions = rng.choices([a for a, _ in ACTIONS], [w for _, w in ACTIONS],
                          k=args.policy_requests)
    workload: list[Request] = [
        (agency, kinds[agency], action, purpose, rng.choice(contexts))
        for (agency, purpose), action in zip(callers, actions, strict=True)
    ]

    def lookup(batch: list[Request]) -> None:
        table = policy.exact
        for agency, _kind, action, purpose, _record in batch:
            table.get((agency, "subject", action, purpose))

    def decisions(batch: list[Request]) -> None:
        for agency, kind, action, purpose, record in batch:
            decide(policy, agency=agency, agency_kind=kind, action=action, resource="subject",
                   purpose=purpose, record=record, now=now)

    def scopes(batch: list[Request]) -> None:
        for agency, kind, _action, purpose, _record in batch:
            list_scope(policy, agency=agency, agency_kind=kind, action="list",
                       resource="subject", purpose=purpose, now=now)

    rates = _interleaved({"lookup": lookup, "decide": decisions, "list_scope": scopes},
                         workload, args.policy_rounds)
    base = median(rates["lookup"])
    permits = sum(
        decide(policy, agency=a, agency_kind=k, action=act, resource="subject", purpose=p,
               record=r, now=now).permitted for a, k, act, p, r in workload)
    main = Table(
        f"Decisions over a sampled workload of {len(workload):,} requests "
        f"(median of {len(rates['decide'])} interleaved rounds)",
        ["operation", "per second", "rounds", "us each", "x the bare table lookup"],
    )
    main.add("baseline: policy.exact.get(key) (the compiled table lookup)", fmt_rate(base),
             spread(rates["lookup"]), f"{1e6 / base:.2f}", "1.00")
    for name, label in (("decide", "decide(...) with the subject's RecordContext"),
                        ("list_scope", "list_scope(...) (action list)")):
        rate = median(rates[name])
        main.add(label, fmt_rate(rate), spread(rates[name]), f"{1e6 / rate:.2f}",
                 f"{base / rate:.1f}")
    main.notes += [
        f"Workload: callers weighted {', '.join(f'{a} {w}' for a, _, w in MIX)}; actions "
        f"read 80 %, list 15 %, search 5 %; records drawn from the {len(contexts):,} demo "
        f"subjects' real record contexts; {permits / len(workload):.0%} of decisions permit.",
        f"The compiled policy holds {len(policy.agreements)} agreements "
        f"({len(policy.exact)} (recipient, resource, action, purpose) keys).",
    ]
    section.tables += [main, _per_caller(policy, workload, now), _compile(policy)]
    return section


def _interleaved(functions: dict[str, Callable[[list[Request]], None]], workload: list[Request],
                 rounds: int) -> dict[str, list[float]]:
    """Per-second rates of each function over slices of the workload, rounds interleaved."""
    sizes = {}
    for name, fn in functions.items():
        began = time.perf_counter()
        fn(workload[:500])
        each = (time.perf_counter() - began) / 500
        sizes[name] = max(500, min(len(workload), int(ROUND_SECONDS / max(each, 1e-9))))
    rates: dict[str, list[float]] = {name: [] for name in functions}
    deadline = Deadline(90)
    for round_no in range(rounds):
        if round_no >= 3 and deadline.passed():
            break
        for name, fn in functions.items():
            batch = workload[: sizes[name]]
            began = time.perf_counter()
            fn(batch)
            rates[name].append(len(batch) / (time.perf_counter() - began))
    return rates


def _per_caller(policy: PolicySet, workload: list[Request], now: datetime) -> Table:
    table = Table("decide() per caller (their share of the same workload, median of 3 rounds)",
                  ["caller, purpose", "requests", "permit", "per second", "us each"])
    by_caller: dict[tuple[str, str], list[Request]] = {}
    for request in workload:
        by_caller.setdefault((request[0], request[3]), []).append(request)
    for (agency, purpose), batch in sorted(by_caller.items(), key=lambda kv: -len(kv[1])):
        outcomes = [decide(policy, agency=a, agency_kind=k, action=act, resource="subject",
                           purpose=p, record=r, now=now) for a, k, act, p, r in batch]
        rates = []
        for _ in range(3):
            began = time.perf_counter()
            for a, k, act, p, r in batch:
                decide(policy, agency=a, agency_kind=k, action=act, resource="subject",
                       purpose=p, record=r, now=now)
            rates.append(len(batch) / (time.perf_counter() - began))
        permitted = sum(d.permitted for d in outcomes) / len(outcomes)
        rate = median(rates)
        table.add(f"{agency}, {purpose}", len(batch), f"{permitted:.0%}", fmt_rate(rate),
                  f"{1e6 / rate:.2f}")
    table.notes.append("The cost follows the grants evaluated: a permit also builds the field "
                       "map (WMP, many fields, is the dearest), a denial builds a reason for "
                       "each candidate and other grant, a caller with no grant on subjects is "
                       "a lookup and little else.")
    return table


def _compile(policy: PolicySet) -> Table:
    times = []
    for _ in range(20):
        began = time.perf_counter()
        compile_policy(policy.agreements)
        times.append(time.perf_counter() - began)
    table = Table("compile_policy over the agreements in force (median of 20)",
                  ["agreements", "compile"])
    table.add(len(policy.agreements), f"{median(times) * 1000:.2f} ms")
    return table
