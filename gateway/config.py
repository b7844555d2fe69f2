"""Configuration from environment variables, with safe defaults for the embedded set-up.

Production mode (`GATEWAY_ENV=production`) refuses demo keys and missing keys, so a
misconfigured deployment fails at start-up rather than serving with throwaway secrets.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


@dataclass(frozen=True)
class Config:
    env: str = "development"
    instance_path: Path = ROOT / "instance"
    database_url: str = ""
    key_dir: Path = ROOT / "instance" / "keys"
    issuer: str = "http://127.0.0.1:8000"
    audience: str = "iom-gateway"
    token_lifetime_seconds: int = 600
    max_body_bytes: int = 1_000_000
    # Reverse proxies in front of the gateway that set X-Forwarded-For: their number, exactly.
    # 0 trusts none (the socket peer is the client); too many would let clients pick an address.
    trusted_proxies: int = 0
    audit_origin: str = "iom-gateway.local/audit"
    audit_seal_in_process: bool = True
    audit_seal_interval_seconds: float = 1.0
    audit_checkpoint_every_events: int = 1000
    audit_checkpoint_every_seconds: float = 5.0
    audit_gap_grace_seconds: float = 2.0
    pseudonym_grace_days: int = 90
    # A caseload snapshot may end at most this share of the agency's open cases unconfirmed.
    snapshot_max_end_share: float = 0.2
    # A snapshot session not completed within this many hours expires and ends nothing.
    snapshot_ttl_hours: float = 24.0
    agreements_dir: Path = ROOT / "policies" / "agreements"
    # Performance figures (gateway.services.metrics): disclosure control and finality.
    metrics_min_count: int = 8  # counts from 1 to this minus 1 are suppressed
    metrics_round_to: int = 5  # released counts are rounded to a multiple of this
    metrics_min_rate_base: int = 30  # a rate over fewer people than this is withheld
    metrics_waiting_months: int = 6  # after the 12-month follow-up, before figures are final
    metrics_unit_costs: Path = ROOT / "gateway" / "data" / "unit_costs.yaml"

    @property
    def production(self) -> bool:
        return self.env == "production"

    @classmethod
    def from_env(cls, **overrides: Any) -> Config:
        instance = Path(os.environ.get("GATEWAY_INSTANCE_PATH", ROOT / "instance"))
        config = cls(
            env=os.environ.get("GATEWAY_ENV", "development"),
            instance_path=instance,
            database_url=os.environ.get(
                "GATEWAY_DATABASE_URL", f"sqlite:///{instance / 'gateway.db'}"
            ),
            key_dir=Path(os.environ.get("GATEWAY_KEY_DIR", instance / "keys")),
            issuer=os.environ.get("GATEWAY_ISSUER", "http://127.0.0.1:8000"),
            audience=os.environ.get("GATEWAY_AUDIENCE", "iom-gateway"),
            token_lifetime_seconds=_int("GATEWAY_TOKEN_LIFETIME", 600),
            max_body_bytes=_int("GATEWAY_MAX_BODY_BYTES", 1_000_000),
            trusted_proxies=_int("GATEWAY_TRUSTED_PROXIES", 0),
            audit_seal_in_process=os.environ.get("GATEWAY_AUDIT_SEAL_IN_PROCESS", "1") == "1",
            audit_seal_interval_seconds=_float("GATEWAY_AUDIT_SEAL_INTERVAL", 1.0),
            audit_checkpoint_every_events=_int("GATEWAY_AUDIT_CHECKPOINT_EVENTS", 1000),
            audit_checkpoint_every_seconds=_float("GATEWAY_AUDIT_CHECKPOINT_SECONDS", 5.0),
            pseudonym_grace_days=_int("GATEWAY_PSEUDONYM_GRACE_DAYS", 90),
            snapshot_max_end_share=_float("GATEWAY_SNAPSHOT_MAX_END_SHARE", 0.2),
            snapshot_ttl_hours=_float("GATEWAY_SNAPSHOT_TTL_HOURS", 24.0),
            metrics_min_count=_int("GATEWAY_METRICS_MIN_COUNT", 8),
            metrics_round_to=_int("GATEWAY_METRICS_ROUND_TO", 5),
            metrics_min_rate_base=_int("GATEWAY_METRICS_MIN_RATE_BASE", 30),
            metrics_waiting_months=_int("GATEWAY_METRICS_WAITING_MONTHS", 6),
            metrics_unit_costs=Path(
                os.environ.get(
                    "GATEWAY_METRICS_UNIT_COSTS", ROOT / "gateway" / "data" / "unit_costs.yaml"
                )
            ),
        )
        return replace(config, **overrides)
