"""Shared fixtures: the demo agreements as the gateway would load them, compiled once."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from policies.agreements import check_directory
from policies.engine import PolicySet, compile_policy
from policies.model import Agreement
from policies.vocabulary import DEMO_AGENCIES

AGREEMENTS_DIR = Path(__file__).resolve().parents[2] / "policies" / "agreements"
HERE = Path(__file__).resolve().parent
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def demo_agreements() -> list[Agreement]:
    agreements, problems = check_directory(AGREEMENTS_DIR, DEMO_AGENCIES)
    assert problems == []
    return agreements


@pytest.fixture(scope="session")
def demo_policy(demo_agreements: list[Agreement]) -> PolicySet:
    return compile_policy(demo_agreements)
