"""Synthetic demo data: a West Midlands IOM partnership as the 2015 report to the Strategic
Policing and Crime Board describes it, populated with made-up people.

`load_demo` registers the partner agencies and one API client each (through the registry
service, so the registrations are audited like any other), the seven local authority areas with
their policing units, and a cohort of synthetic subjects with identifiers, cohort memberships,
risk assessments, needs, case management and, for domestic-abuse perpetrators, victim links.

Nothing here is real. Names and street names come from Faker's en_GB provider; postcodes are
well-formed and in the right districts but the inward codes are random; phone numbers are in
Ofcom's range reserved for drama (07700 900000-900999), so none can ring anybody; PNC ids
carry a correct check letter but are random; the voluntary providers' names are invented.

Determinism: for a given seed and `today`, every subject, identifier, name, date and relation
is the same on every run (a seeded `random.Random` and a seeded Faker; internal subject ids
are drawn from the same generator). Only the API client secrets, minted by the registry, the
registrations' audit events and the gateway's own bookkeeping timestamps (`created_at`,
`updated_at`) differ between runs.

Time: ages are ages on `today` (default: the real date), because the gateway decides age
conditions such as "youth caseload, max_age 17" on the real date. Cohort memberships start in
the report's period, 2014-2016, except where the person was too young then (a 15-year-old's
youth cohort membership starts when they were old enough to offend, not in 2015).
"""

from gateway.demo.credentials import format_credentials, read_credentials, write_credentials
from gateway.demo.load import DemoAlreadyLoaded, load_demo
from gateway.demo.world import AREA_DISTRICTS, DEMO_AGENCIES, DEMO_AREAS
from gateway.services.registry import IssuedClient

__all__ = [
    "AREA_DISTRICTS",
    "DEMO_AGENCIES",
    "DEMO_AREAS",
    "DemoAlreadyLoaded",
    "IssuedClient",
    "format_credentials",
    "load_demo",
    "read_credentials",
    "write_credentials",
]
