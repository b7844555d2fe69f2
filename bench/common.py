"""What every suite shares: result tables, medians, throwaway databases, tool installs."""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import gateway
from tests import databases

# The tree whose gateway is imported (the working tree, or a snapshot the bench runs from).
ROOT = Path(gateway.__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_POSTGRES_URL = databases.DEFAULT_POSTGRES_URL
BACKEND_LABEL = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


# --- results ------------------------------------------------------------------------------


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        self.rows.append([str(c) for c in cells])

    def markdown(self) -> str:
        lines = [f"**{self.title}**", ""]
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "|".join("---" for _ in self.columns) + "|")
        lines += [
            "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in self.rows
        ]
        lines += [""] + [f"- {note}" for note in self.notes]
        return "\n".join(lines).rstrip() + "\n"

    def text(self) -> str:
        widths = [
            max(len(c), *(len(r[i]) for r in self.rows)) if self.rows else len(c)
            for i, c in enumerate(self.columns)
        ]
        header = "  ".join(c.ljust(w) for c, w in zip(self.columns, widths, strict=True))
        lines = [self.title, header]
        lines.append("  ".join("-" * w for w in widths))
        lines += [
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
            for row in self.rows
        ]
        lines += [f"  * {note}" for note in self.notes]
        return "\n".join(lines) + "\n"


@dataclass
class Section:
    """One suite's outcome: its tables, free notes, and how long it took."""

    name: str
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    failed: str | None = None  # the exception line, when the suite could not finish


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: Sequence[float]) -> str:
    """min-max of the rounds, to show how noisy a median was."""
    return f"{min(values):,.0f}-{max(values):,.0f}" if values else "-"


def per_second(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}/s"


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


class Deadline:
    """A time bound for a loop that also has a count bound: `while n < N and not dl.passed()`."""

    def __init__(self, seconds: float) -> None:
        self.until = time.monotonic() + seconds

    def passed(self) -> bool:
        return time.monotonic() > self.until


# --- the machine --------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, str]:
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }


# --- databases ----------------------------------------------------------------------------


def postgres_server_url() -> str | None:
    """The PostgreSQL server to create throwaway databases on, or None when none answers."""
    url = os.environ.get(
        "BENCH_DATABASE_URL", os.environ.get("TEST_DATABASE_URL", DEFAULT_POSTGRES_URL)
    )
    return url if databases.answers(url) else None


def available_backends(wanted: Sequence[str]) -> tuple[list[str], list[str]]:
    """(backends to run, notes about any that cannot run here)."""
    notes, backends = [], []
    for backend in wanted:
        if backend == "postgresql" and postgres_server_url() is None:
            notes.append(
                "PostgreSQL skipped: no server answered at BENCH_DATABASE_URL / "
                f"TEST_DATABASE_URL / {DEFAULT_POSTGRES_URL}"
            )
            continue
        backends.append(backend)
    return backends, notes


@contextmanager
def throwaway_database(backend: str, directory: Path) -> Iterator[str]:
    """The URL of an empty database that is dropped afterwards, on the bench's server."""
    server = postgres_server_url() if backend == "postgresql" else None
    with databases.throwaway_database(backend, directory, server) as url:
        yield url


# --- tools --------------------------------------------------------------------------------


def ensure_module(module: str, package: str) -> None:
    """Install `package` into this interpreter's environment unless `module` imports already."""
    if importlib.util.find_spec(module) is not None:
        return
    print(f"[bench] installing {package} with pip", flush=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", package], check=True, timeout=600
    )
    importlib.invalidate_caches()


def ensure_wrk() -> str:
    """The wrk binary, installed from the Debian archive (as root) if it is missing."""
    found = shutil.which("wrk")
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None:
        raise RuntimeError("wrk is not installed and apt-get is not available")
    print("[bench] installing wrk with apt-get", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(
        [apt, "update", "-qq"], check=True, timeout=600, env=env, stdout=subprocess.DEVNULL
    )
    subprocess.run(
        [apt, "install", "-y", "-qq", "wrk"],
        check=True,
        timeout=600,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("apt-get install wrk did not provide a wrk binary")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
