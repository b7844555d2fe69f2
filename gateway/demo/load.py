"""Loading the demo into a database: the partnership registered through the registry service,
then the drawn people added; apart from the drawing, which never sees a session."""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa
from sqlalchemy.orm import Session

from gateway.demo.generate import _Generator
from gateway.demo.world import DEMO_AGENCIES, DEMO_AREAS, SCOPES_BY_KIND
from gateway.models import Agency, Area, PolicingUnit
from gateway.services.registry import IssuedClient, RegistryError, add_agency, add_client


class DemoAlreadyLoaded(RegistryError):
    """The database already holds the demo agencies; loading twice would duplicate people."""


def load_demo(
    session: Session, *, seed: int = 2015, subjects: int = 2000, today: date | None = None
) -> list[IssuedClient]:
    """Register the demo partnership and `subjects` synthetic people; the caller commits.

    Returns the issued API clients (with their secrets, shown only this once). Raises
    `DemoAlreadyLoaded` when agency WMP is already registered.
    """
    if subjects < 0:
        raise ValueError("subjects must not be negative")
    if session.scalar(sa.select(Agency.id).where(Agency.code == "WMP")) is not None:
        raise DemoAlreadyLoaded("demo data already loaded (agency WMP exists)")
    _ensure_areas(session)
    issued: list[IssuedClient] = []
    for spec in DEMO_AGENCIES:
        add_agency(session, spec.code, spec.name, spec.kind, list(spec.areas))
        issued.append(
            add_client(
                session,
                spec.code,
                f"{spec.name} demo client",
                list(SCOPES_BY_KIND[spec.kind]),
                client_id=f"{spec.code.lower()}-demo",
            )
        )
    session.flush()
    agency_ids = dict(
        session.execute(
            sa.select(Agency.code, Agency.id).where(
                Agency.code.in_([spec.code for spec in DEMO_AGENCIES])
            )
        ).all()
    )
    generator = _Generator(seed, today or date.today(), agency_ids)
    session.add_all(generator.people(subjects))
    session.flush()
    session.add_all(generator.offence_rows)
    session.flush()
    return issued


def _ensure_areas(session: Session) -> None:
    """Add the areas and policing units a migration or an earlier load did not add."""
    areas = set(session.scalars(sa.select(Area.code)))
    units = set(session.scalars(sa.select(PolicingUnit.code)))
    for spec in DEMO_AREAS:
        if spec.code not in areas:
            session.add(Area(code=spec.code, name=spec.name))
    session.flush()
    for spec in DEMO_AREAS:
        for unit in spec.units:
            if unit.code not in units:
                session.add(PolicingUnit(code=unit.code, name=unit.name, area_code=spec.code))
    session.flush()
