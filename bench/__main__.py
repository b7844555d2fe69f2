"""`python -m bench [audit] [gateway] [pseudonyms] [policy] [options]` (`make bench`: all).

Runs the suites (all by default), prints a table per suite and rewrites their sections of
bench/RESULTS.md with the command, the machine, the date and the figures. Sections of suites
not run this time, and the hand-written notes block, are kept as they were.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

from bench import suite_audit, suite_gateway, suite_policy, suite_pseudonyms
from bench.common import BENCH_DIR, ROOT, Section, machine_info

SUITES: dict[str, ModuleType] = {
    "audit": suite_audit,
    "gateway": suite_gateway,
    "pseudonyms": suite_pseudonyms,
    "policy": suite_policy,
}
HEADER = """# Benchmark results

Written by `python -m bench` (`make bench`); `python -m bench SUITE` rewrites that suite's
section only. The machines are shared and noisy (2 cores): every figure is a median of several
rounds, and what matters is the ratio to the baseline measured in the same run, not the
absolute number. Targets are reported as PASS/MISS, never asserted.
"""
BLOCK = re.compile(r"<!-- bench:begin (\w+) -->\n(.*?)<!-- bench:end \1 -->\n", re.S)
FAILURE = re.compile(r"\n> \*\*The latest run of this suite failed\*\*.*?\n", re.S)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suites", nargs="*", metavar="SUITE",
                        help=f"any of {', '.join(SUITES)} (default: all)")
    parser.add_argument("--backends", default="sqlite,postgresql",
                        help="database backends for the database suites")
    parser.add_argument("--subjects", type=int, default=2000,
                        help="subjects in the demo world")
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "RESULTS.md",
                        help="results file to update")
    parser.add_argument("--no-write", action="store_true", help="print only")
    for module in SUITES.values():
        module.add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    unknown = [s for s in args.suites if s not in SUITES]
    if unknown:
        print(f"unknown suite(s): {', '.join(unknown)}; choose from {', '.join(SUITES)}")
        return 2
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    names = args.suites or list(SUITES)
    command = " ".join(["python -m bench", *argv])
    print(run_context(command), flush=True)
    failed = False
    sections: dict[str, tuple[Section, str]] = {}
    for name in names:
        print(f"\n=== {name} ===", flush=True)
        context = run_context(command)  # the date and the load when this suite started
        began = time.monotonic()
        try:
            section = SUITES[name].run(args)
        except Exception:  # one broken suite must not lose the others' figures
            failed = True
            section = Section(name, failed=traceback.format_exc().strip().splitlines()[-1])
            traceback.print_exc()
        section.seconds = time.monotonic() - began
        sections[name] = (section, context)
        print_section(section)
    if not args.no_write:
        write_results(args.results, sections)
        print(f"\nwrote {args.results}")
    return 1 if failed else 0


def run_context(command: str) -> str:
    machine = machine_info()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"Command: `{command}`  \n"
            f"Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC  \n"
            f"Machine: nproc {machine['nproc']}, {machine['cpu']}, Python {machine['python']}, "
            f"{machine['platform']}; load average at start {load}  \n"
            f"Code: {code_version()}")


def code_version() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, text=True, capture_output=True, timeout=10,
                               check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        # e.g. a `git archive` snapshot; BENCH_CODE_LABEL can say which commit it is
        return os.environ.get("BENCH_CODE_LABEL", f"{ROOT} (not a git checkout)")
    return f"{head}" + (" with uncommitted changes in the working tree" if dirty else "")


def print_section(section: Section) -> None:
    for table in section.tables:
        print()
        print(table.text(), end="")
    for note in section.notes:
        print(f"note: {note}")
    if section.failed is not None:
        print(f"FAILED: {section.failed}")
    print(f"({section.name}: {section.seconds:.0f} s)")


def render_section(section: Section, context: str) -> str:
    parts = [f"## {section.name}", "", context + f"  \nDuration: {section.seconds:.0f} s", ""]
    for table in section.tables:
        parts += [table.markdown()]
    parts += [f"- {note}" for note in section.notes]
    if section.failed is not None:
        parts += [f"- FAILED: `{section.failed}`"]
    return "\n".join(parts).rstrip() + "\n\n"


def write_results(path: Path, sections: dict[str, tuple[Section, str]]) -> None:
    """Rewrite the sections of the suites that ran. A suite that failed keeps its previous
    figures under a warning, so a broken run never erases the last good one."""
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    blocks = dict(BLOCK.findall(old))
    for name, (section, context) in sections.items():
        if section.failed is None or name not in blocks:
            blocks[name] = render_section(section, context)
            continue
        previous = FAILURE.sub("", blocks[name])
        heading, _, rest = previous.partition("\n")
        warning = (f"> **The latest run of this suite failed** ({context.splitlines()[1].strip()}, "
                   f"`{section.failed}`); the figures below are from the run before it.\n")
        blocks[name] = f"{heading}\n\n{warning}{rest}"
    out = [HEADER]
    order = ["notes", *SUITES]
    for name in order + sorted(set(blocks) - set(order)):
        if name in blocks:
            out.append(f"<!-- bench:begin {name} -->\n{blocks[name]}<!-- bench:end {name} -->\n")
    path.write_text("\n".join(out), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
