"""Caseload sync: the partners' picture of who is managed by whom, pushed in batches.

Plain functions over a session and plain data (records as `schemas.caseload` loads them).

Rules, and why:

* **Upsert by (agency, local case id).** The agency's own case id is the only key its system
  is sure of; the gateway's subject id is what the sync *finds out*.
* **Identity on strong identifiers only.** A case is linked to an existing person only through
  a PNC, CRN or NOMIS number, never on name and date of birth (common names and shared
  birthdays would merge two people's records, the worst failure a sharing gateway can have).
  Conflicts are reported for the record and nothing of it is applied: identifiers of one case
  that belong to different people (`identifiers_disagree`), an identifier that belongs to
  somebody other than the person the case is already linked to (`case_linked_elsewhere`), a
  person who already holds a different number in that scheme (`identifier_differs`), and, when
  a new case is linked to a known person, a different date of birth (`date_of_birth_differs`:
  the one use of the name/date-of-birth fields besides creating a new person's record). A
  record matching nobody creates a person, in the record's `area` (which the agency must serve).
* **Unchanged records touch nothing.** Each case keeps the hash of the normalised record last
  applied; a record with the same hash is reported `unchanged` after one query for the batch.
* **Bulk, not per record.** A batch costs a fixed number of queries (existing cases, the
  identifiers it names, those people's facts) and one executemany per table written.
* **Shared facts.** A cohort flag the record lists is added (as set by this agency) if the
  person lacks it; each case keeps the flags its record lists, so a flag is held while any
  agency's cases list it. A flag this agency's sync set that none of its cases lists any more
  (judged on the batch's final state, whatever the order of the records or which of them
  were unchanged) is ended (end date yesterday: history is kept), or handed to another
  agency whose cases still list it. Flags set by other agencies, or outside caseload sync,
  are never ended by this agency's export: it speaks only for what this agency said. Needs are
  upserted per pathway; a risk assessment is added when this agency has not already recorded
  the same one.
* **Allocation.** NPS takes the higher-risk cases: an active statutory CRC case whose risk of
  serious harm is high or very high is flagged for transfer to NPS, an NPS case whose risk is
  low or medium is flagged to CRC, and a flag whose reason went away is cleared. Each change
  of flag is a `caseload.transfer_flagged` change for both agencies.
* **Changes.** A case opened or closed, a cohort flag added, or risk or needs changed is a
  `caseload.subject_updated` change for the other agencies managing the person; the change
  itself carries no personal data (the feed renders the person as each reader may see them).
* **Snapshots** end the agency's open cases missing from the snapshot, behind a guard: ending
  more than `max_end_share` of the open caseload needs `confirm_end`, so a truncated export
  cannot wipe a caseload. `mode=snapshot` is a snapshot of one batch; a larger caseload is sent
  in a snapshot session of many batches (`gateway.services.snapshots`), completed once, with
  the same guard (`guard_snapshot`) and the same ending (`end_cases`).
"""

from gateway.services.caseload.known import open_cases_query
from gateway.services.caseload.records import reoffending_band
from gateway.services.caseload.results import CASELOAD_KINDS, CaseloadError, SyncingAgency
from gateway.services.caseload.sync import end_cases, guard_snapshot, sync_caseload
from gateway.services.caseload.views import case_views

__all__ = [
    "CASELOAD_KINDS",
    "CaseloadError",
    "SyncingAgency",
    "case_views",
    "end_cases",
    "guard_snapshot",
    "open_cases_query",
    "reoffending_band",
    "sync_caseload",
]
