"""Turning a pyinstrument session into tables: top self time by function, self time by
package, and inclusive time of the project's own functions."""

from __future__ import annotations

import sysconfig
from collections import defaultdict
from pathlib import Path

from bench.common import Table

PROJECT_PACKAGES = ("gateway", "audit", "policies", "schemas")
STDLIB = Path(sysconfig.get_paths()["stdlib"]).resolve()


def package_of(file_path: str | None, root: Path) -> str:
    """gateway / sqlalchemy / stdlib json / ... for a frame's file."""
    if not file_path:
        return "(native)"
    path = Path(file_path)
    parts = path.parts
    if "site-packages" in parts:
        rest = parts[parts.index("site-packages") + 1:]
        return rest[0].removesuffix(".py") if rest else "site-packages"
    try:
        relative = path.resolve().relative_to(root)
        return relative.parts[0].removesuffix(".py")
    except ValueError:
        pass
    try:
        relative = path.resolve().relative_to(STDLIB)
        return "stdlib " + relative.parts[0].removesuffix(".py")
    except ValueError:
        return "(other)"


def _where(frame, root: Path) -> str:  # type: ignore[no-untyped-def]
    path = frame.file_path or ""
    short = path
    if "site-packages/" in path:
        short = path.split("site-packages/", 1)[1]
    elif path.startswith(str(root)):
        short = str(Path(path).relative_to(root))
    elif path.startswith(str(STDLIB)):
        short = "stdlib/" + str(Path(path).relative_to(STDLIB))
    return f"{short}:{frame.line_no}"


def _aggregate(session, root: Path):  # type: ignore[no-untyped-def]
    """(total, self time by (function, where), self time by package, inclusive time of the
    project's functions, recursion counted once)."""
    frame_root = session.root_frame()
    total = frame_root.time if frame_root is not None else 0.0
    self_time: dict[tuple[str, str], float] = defaultdict(float)
    by_package: dict[str, float] = defaultdict(float)
    inclusive: dict[tuple[str, str], float] = defaultdict(float)

    def walk(frame, ancestors: frozenset) -> None:  # type: ignore[no-untyped-def]
        if frame.is_synthetic:
            return
        key = (frame.function or "?", _where(frame, root))
        own = frame.total_self_time
        self_time[key] += own
        package = package_of(frame.file_path, root)
        by_package[package] += own
        if package in PROJECT_PACKAGES and key not in ancestors:
            inclusive[key] += frame.time
        for child in frame.children:
            walk(child, ancestors | {key})

    if frame_root is not None:
        walk(frame_root, frozenset())
    return total, self_time, by_package, inclusive


def top_self_table(session, root: Path, title: str, top: int = 8) -> Table:  # type: ignore[no-untyped-def]
    """One table: the functions with the most self time."""
    total, self_time, _, _ = _aggregate(session, root)
    table = Table(title, ["#", "function", "where", "self", "share"])
    for rank, ((function, where), value) in enumerate(
            sorted(self_time.items(), key=lambda kv: -kv[1])[:top], start=1):
        table.add(rank, f"`{function}`", f"`{where}`", f"{value:.2f} s", _share(value, total))
    return table


def profile_tables(session, root: Path, label: str, requests: int,  # type: ignore[no-untyped-def]
                   seconds: float, top: int = 15) -> list[Table]:
    total, self_time, by_package, inclusive = _aggregate(session, root)
    per_request_us = seconds / requests * 1e6
    head = (f"{label}: pyinstrument over {requests:,} in-process GETs "
            f"({per_request_us:,.0f} us/request under the profiler)")
    tops = Table(f"{head}: top {top} by self time", ["#", "function", "where", "self", "share"])
    for rank, ((function, where), value) in enumerate(
            sorted(self_time.items(), key=lambda kv: -kv[1])[:top], start=1):
        tops.add(rank, f"`{function}`", f"`{where}`", f"{value:.2f} s", _share(value, total))
    tops.notes.append("Self time of a Python function includes the C code it calls (the "
                      "database driver under `do_execute`, hashing, JSON encoding...).")
    packages = Table(f"{label}: self time by package", ["package", "self", "share"])
    for package, value in sorted(by_package.items(), key=lambda kv: -kv[1])[:12]:
        packages.add(package, f"{value:.2f} s", _share(value, total))
    own = Table(f"{label}: the project's functions by inclusive time (top {top})",
                ["function", "where", "inclusive", "share", "us/request"])
    for (function, where), value in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]:
        own.add(f"`{function}`", f"`{where}`", f"{value:.2f} s", _share(value, total),
                f"{value / requests * 1e6:,.0f}")
    return [tops, packages, own]


def _share(value: float, total: float) -> str:
    return f"{value / total:.1%}" if total else "-"
