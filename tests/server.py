"""A real gateway on loopback for server and reliability tests: migrated database, demo world,
gunicorn.

Tests drive it over HTTP only, like a partner system would.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call(
    url: str, *, data: bytes | None = None, headers: dict | None = None, timeout: float = 30
) -> tuple[int, dict, dict]:
    """(status, headers, JSON body); connection failures raise OSError."""
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, dict(response.headers), json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        body = error.read()
        try:
            parsed = json.loads(body or b"{}")
        except ValueError:
            parsed = {"raw": body[:200].decode(errors="replace")}
        return error.code, dict(error.headers), parsed


@dataclass
class Gateway:
    """A gunicorn-served gateway with its own database and instance folder."""

    database_url: str
    tmp: Path
    workers: int = 4
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "GATEWAY_DATABASE_URL": self.database_url,
            "GATEWAY_INSTANCE_PATH": str(self.tmp / "instance"),
            "GATEWAY_KEY_DIR": str(self.tmp / "keys"),
            "GATEWAY_RATE_LIMIT": "off",
            "GATEWAY_TOKEN_RATE_LIMIT": "off",
            "GATEWAY_AUDIT_SEAL_INTERVAL": "0.2",
            "GATEWAY_AUDIT_CHECKPOINT_SECONDS": "1",
            "PYTHONPATH": str(ROOT),
            **self.extra_env,
        }

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "gateway.cli", *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    def prepare(self, subjects: int = 60) -> None:
        for args in (("db", "upgrade"), ("demo", "load", "--subjects", str(subjects))):
            result = self.cli(*args)
            assert result.returncode == 0, result.stderr

    def credentials(self) -> dict[str, dict]:
        path = self.tmp / "instance" / "demo-credentials.json"
        return {c["agency"]: c for c in json.loads(path.read_text())}

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                str(self.workers),
                "--graceful-timeout",
                "5",
                "wsgi:app",
            ],
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if call(self.base + "/healthz", timeout=2)[0] == 200:
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("gateway did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.process = None

    def worker_pids(self) -> list[int]:
        assert self.process is not None
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.process.pid)],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        return [int(p) for p in out.split()]

    def token(self, agency: str) -> str:
        creds = self.credentials()[agency]
        basic = base64.b64encode(f"{creds['client_id']}:{creds['client_secret']}".encode()).decode()
        status, _, body = call(
            self.base + "/oauth/token",
            data=b"grant_type=client_credentials",
            headers={"Authorization": f"Basic {basic}"},
        )
        assert status == 200, body
        return body["access_token"]

    def headers(self, agency: str, purpose: str) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.token(agency)}",
            "X-Purpose": purpose,
            "Content-Type": "application/json",
        }
