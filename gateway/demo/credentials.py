"""The issued clients' credentials file and terminal table, apart from loading because the
CLI reads and shows them on their own, long after the load that issued them."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from gateway.services.registry import IssuedClient


def write_credentials(path: str | os.PathLike[str], clients: Iterable[IssuedClient]) -> Path:
    """Write the clients' credentials as JSON readable by the owner only (mode 0600).

    The file is written beside its destination and renamed into place, so it is never
    readable by others, not even for a moment, and a reader never sees half a file.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    entries = [
        {
            "client_id": c.client_id,
            "client_secret": c.client_secret,
            "agency": c.agency,
            "scopes": list(c.scopes),
        }
        for c in clients
    ]
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(entries, handle, indent=2, ensure_ascii=False)
            handle.write("\n")
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def read_credentials(path: str | os.PathLike[str]) -> list[IssuedClient]:
    """The clients a `write_credentials` file holds."""
    entries = json.loads(Path(path).read_text(encoding="utf-8"))
    return [
        IssuedClient(e["client_id"], e["client_secret"], e["agency"], tuple(e["scopes"]))
        for e in entries
    ]


def format_credentials(clients: Sequence[IssuedClient]) -> str:
    """A small aligned table of the clients for the terminal."""
    header = ("AGENCY", "CLIENT ID", "CLIENT SECRET", "SCOPES")
    rows = [header] + [
        (c.agency, c.client_id, c.client_secret or "(private_key_jwt)", " ".join(c.scopes))
        for c in clients
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True))
        + "  "
        + row[3]
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines)
