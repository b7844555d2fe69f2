"""Independent verification of audit exports, receipts and checkpoints.

Why standalone: auditors run this on their own machines against files the gateway gave
them, trusting nothing but the log's public key. It imports only the standard library,
``cryptography`` and the stdlib-only modules ``audit.events``, ``audit.merkle`` and
``audit.checkpoint``, and reads exports line by line in constant memory.

    python -m audit.verify --events export.jsonl --checkpoint checkpoint.json \\
        --public-key key.pem [--key-name NAME]
    python -m audit.verify --receipt receipt.json --public-key key.pem
    python -m audit.verify --consistency old.checkpoint new.checkpoint --proof proof.json \\
        --public-key key.pem

Exit status: 0 valid, 1 invalid (the first problem is printed), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit.checkpoint import (
    Checkpoint,
    CheckpointError,
    SignatureError,
    load_public_key,
    verify_checkpoint,
)
from audit.events import CanonicalFormError, canonical_json, event_from_dict, leaf_hash
from audit.merkle import Frontier, verify_consistency, verify_inclusion


class Invalid(Exception):
    """Verification failed; the message names the first bad seq and what is wrong."""


class UsageError(Exception):
    """Bad arguments or unreadable files: exit status 2, distinct from "invalid"."""


@dataclass
class Outcome:
    """A successful verification: what was proven, plus notes on its limits."""

    message: str
    notes: list[str] = field(default_factory=list)


def read_checkpoint(text: str, public_key: Ed25519PublicKey, key_name: str | None) -> Checkpoint:
    """Verify a checkpoint given as its JSON file form or as the bare note."""
    note, stated_id = text, None
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
            note, stated_id = data["note"], data.get("public_key_id")
        except (ValueError, KeyError, TypeError, AttributeError):
            raise Invalid("checkpoint file is neither a note nor {\"note\": ...} JSON") from None
    try:
        checkpoint = verify_checkpoint(note, public_key, key_name)
    except SignatureError as exc:
        raise Invalid(f"checkpoint signature invalid: {exc}") from None
    except CheckpointError as exc:
        raise Invalid(f"checkpoint malformed: {exc}") from None
    if stated_id not in (None, checkpoint.key_id.hex()):
        raise Invalid(f"checkpoint file names key id {stated_id}, but the note is signed "
                      f"under {checkpoint.key_id.hex()}")
    return checkpoint


def _sorted_compact_stdlib(value: dict[str, Any]) -> bytes:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8")


def _refuse_float(text: str) -> Any:
    raise ValueError(f"float {text} has no canonical form")


def _refuse_constant(name: str) -> Any:
    # NaN and Infinity are not JSON, and an encoder may write them back as null: an edited
    # event would then hash like the signed one.
    raise ValueError(f"{name} is not a JSON value")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        raise ValueError("an object repeats a key")
    return value


# Refuses a repeated key too, which a parser reads as its last value and another reader
# as its first: what was verified would not be what the auditor reads.
_STRICT_DECODER = json.JSONDecoder(
    parse_float=_refuse_float, parse_constant=_refuse_constant, object_pairs_hook=_unique_keys
)
_parse_fast = _STRICT_DECODER.decode

try:  # optional accelerator: same bytes, several times faster; the stdlib path is the spec
    import orjson

    def _sorted_compact(value: dict[str, Any]) -> bytes:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)

    # Never changes what is accepted: a line it parses differently from the strict decoder
    # (a float, a repeated key) is not as `write_export` wrote it, so `entry_leaf` parses it
    # again strictly; and a line it refuses is parsed strictly before it is called invalid.
    _parse_fast = orjson.loads
except ImportError:  # pragma: no cover - exercised by the stdlib-only test
    _sorted_compact = _sorted_compact_stdlib


def _entries(lines: Iterator[str]) -> Iterator[tuple[int, dict[str, Any], str]]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            try:
                entry = _parse_fast(line)
            except ValueError:
                entry = _STRICT_DECODER.decode(line)  # the exact problem, or it is fine
            if not isinstance(entry, dict) or type(entry.get("seq")) is not int:
                raise ValueError("no integer seq")
        except ValueError as exc:
            raise Invalid(f"export line {number} is not a valid entry: {exc}") from None
        yield number, entry, line


def entry_leaf(entry: dict[str, Any], line: str | None = None) -> bytes:
    """Recompute an entry's leaf hash from its event and check it against the stated one.

    `line`: the export line the entry was parsed from (None: the caller parsed it strictly).

    Fast path: for float-free values and ASCII keys, sorted compact `json.dumps` is exactly
    the canonical form (a signed event has no floats, and a float is always written with a
    point or an exponent, so one can never reproduce a signed hash). A match means these are the
    very bytes the sealer hashed; it is taken only if the line is exactly what `write_export`
    writes for this entry, so that no repeated key hides another value in it. Anything else
    pays for strict parsing and the full canonical encoding and validation, which also say
    what is wrong.
    """
    seq = entry["seq"]
    event = entry.get("event")
    if isinstance(event, dict):
        try:
            data = _sorted_compact(event)
            value = leaf_hash(data)
        except (TypeError, ValueError, UnicodeEncodeError):
            data, value = b"", b""
        if entry.get("leaf_hash") == value.hex() and (
            line is None or _as_written(line, entry, data)
        ):
            return value
    if line is not None:
        try:
            event = _STRICT_DECODER.decode(line).get("event")
        except ValueError as exc:
            raise Invalid(f"seq {seq}: export line is not valid: {exc}") from None
    try:
        event_from_dict(event)
        data = canonical_json(event)
    except (CanonicalFormError, KeyError, TypeError, ValueError) as exc:
        raise Invalid(f"seq {seq}: event is malformed: {exc}") from None
    value = leaf_hash(data)
    if entry.get("leaf_hash") != value.hex():
        raise Invalid(f"seq {seq}: leaf hash does not match event")
    return value


def _as_written(line: str, entry: dict[str, Any], event: bytes) -> bool:
    """Whether `line` is `write_export`'s line for this entry, byte for byte."""
    written = (f'{{"event":{event.decode()},"leaf_hash":"{entry["leaf_hash"]}",'
               f'"seq":{entry["seq"]}}}')
    return len(entry) == 3 and line.rstrip("\r\n") == written


def verify_export(
    lines: Iterator[str], checkpoint: Checkpoint
) -> Outcome:
    """Check seqs 0..n-1 in order, every leaf, and the root at the checkpoint's size."""
    frontier = Frontier()
    size = checkpoint.tree_size

    def check_root() -> None:
        if frontier.size == size and frontier.root() != checkpoint.root_hash:
            raise Invalid(f"root at size {size} does not match checkpoint")

    check_root()
    entries = _entries(lines)
    for _, entry, line in entries:
        seq = entry["seq"]
        expected = frontier.size
        if seq != expected:
            raise Invalid(_order_problem(seq, expected, entries))
        frontier.append(entry_leaf(entry, line))
        check_root()
    count = frontier.size
    if count < size:
        raise Invalid(f"seq {count} missing: the export ends after {count} events "
                      f"but the checkpoint covers {size}")
    outcome = Outcome(f"export of {count} events matches the signed checkpoint at size {size}")
    if count > size:
        outcome.notes.append(
            f"the export holds {count} events; the checkpoint covers only the first {size}: "
            f"seqs {size}..{count - 1} were checked for order and leaf hashes, not signature")
    return outcome


def _order_problem(
    seq: int, expected: int, rest: Iterator[tuple[int, dict[str, Any], str]]
) -> str:
    if seq < expected:
        if seq == expected - 1:
            return f"seq {seq} appears twice"
        return f"seq {seq} appears after {expected - 1}"
    # A higher seq came first: the expected one is either later in the file or gone.
    for _, entry, _line in rest:
        if entry["seq"] == expected:
            return f"seq {expected} appears after {seq}"
    return f"seq {expected} missing"


def verify_receipt(
    receipt: dict[str, Any], public_key: Ed25519PublicKey, key_name: str | None = None
) -> Outcome:
    """One event proven included in a signed tree head, from the receipt alone."""
    try:
        seq, proof_hex = receipt["seq"], receipt["inclusion_proof"]
        note = receipt["checkpoint"]
    except (KeyError, TypeError):
        raise Invalid("receipt lacks seq, inclusion_proof or checkpoint") from None
    if type(seq) is not int or not isinstance(proof_hex, list):
        raise Invalid("receipt seq must be an integer and inclusion_proof a list")
    checkpoint = read_checkpoint(note, public_key, key_name or receipt.get("key_name"))
    if receipt.get("public_key_id") not in (None, checkpoint.key_id.hex()):
        raise Invalid("receipt public_key_id does not match the checkpoint signature")
    if receipt.get("tree_size", checkpoint.tree_size) != checkpoint.tree_size:
        raise Invalid("receipt tree_size differs from its checkpoint's size")
    value = entry_leaf(receipt)
    try:
        proof = [bytes.fromhex(p) for p in proof_hex]
    except (TypeError, ValueError):
        raise Invalid(f"seq {seq}: inclusion proof is not a list of hex hashes") from None
    if not verify_inclusion(seq, checkpoint.tree_size, value, proof, checkpoint.root_hash):
        raise Invalid(f"seq {seq}: inclusion proof does not lead to the checkpoint root "
                      f"at size {checkpoint.tree_size}")
    return Outcome(f"seq {seq} is included in the signed checkpoint at size "
                   f"{checkpoint.tree_size}")


def verify_consistency_files(
    old: Checkpoint, new: Checkpoint, proof_data: Any
) -> Outcome:
    """Two verified checkpoints of one log, the newer extending the older: nothing that
    the older one covered was changed or removed."""
    if old.origin != new.origin:
        raise Invalid(f"checkpoints are from different logs: {old.origin!r}, {new.origin!r}")
    if new.tree_size < old.tree_size:
        raise Invalid(f"new checkpoint (size {new.tree_size}) is smaller than old "
                      f"(size {old.tree_size}): sizes swapped?")
    hashes = proof_data.get("proof") if isinstance(proof_data, dict) else proof_data
    if isinstance(proof_data, dict):
        stated = (proof_data.get("size1", old.tree_size), proof_data.get("size2", new.tree_size))
        if stated != (old.tree_size, new.tree_size):
            raise Invalid(f"proof is for sizes {stated}, checkpoints have "
                          f"{(old.tree_size, new.tree_size)}")
    try:
        proof = [bytes.fromhex(h) for h in hashes]
    except (TypeError, ValueError):
        raise Invalid("proof is not a list of hex hashes") from None
    if not verify_consistency(old.tree_size, new.tree_size, old.root_hash, new.root_hash, proof):
        raise Invalid(f"checkpoint at size {new.tree_size} does not extend the checkpoint "
                      f"at size {old.tree_size}")
    if (old.timestamp is not None and new.timestamp is not None
            and new.tree_size > old.tree_size and new.timestamp <= old.timestamp):
        raise Invalid("the larger checkpoint is not newer than the smaller one")
    return Outcome(f"checkpoint at size {new.tree_size} extends checkpoint at size "
                   f"{old.tree_size}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m audit.verify", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--events", type=Path, help="export file, one JSON entry a line")
    mode.add_argument("--receipt", type=Path, help="receipt JSON for one event")
    mode.add_argument("--consistency", type=Path, nargs=2, metavar=("OLD", "NEW"),
                      help="two checkpoint files (JSON form or bare note)")
    parser.add_argument("--checkpoint", type=Path, help="checkpoint for --events")
    parser.add_argument("--proof", type=Path, help="consistency proof JSON for --consistency")
    parser.add_argument("--public-key", type=Path, required=True, help="Ed25519 key, PEM")
    parser.add_argument("--key-name", help="note key name of the log (default: any name "
                        "whose key id matches the public key)")
    return parser


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None


def _run(args: argparse.Namespace) -> Outcome:
    try:
        public_key = load_public_key(args.public_key.read_bytes())
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load public key {args.public_key}: {exc}") from None
    if args.events is not None:
        if args.checkpoint is None:
            raise UsageError("--events needs --checkpoint")
        checkpoint = read_checkpoint(_read(args.checkpoint), public_key, args.key_name)
        try:
            with args.events.open(encoding="utf-8") as lines:
                return verify_export(iter(lines), checkpoint)
        except OSError as exc:
            raise UsageError(f"cannot read {args.events}: {exc}") from None
        except UnicodeDecodeError:
            raise Invalid("export is not valid UTF-8") from None
    if args.receipt is not None:
        return verify_receipt(_load_json(args.receipt), public_key, args.key_name)
    if args.proof is None:
        raise UsageError("--consistency needs --proof")
    old, new = (read_checkpoint(_read(p), public_key, args.key_name) for p in args.consistency)
    return verify_consistency_files(old, new, _load_json(args.proof))


def _load_json(path: Path) -> Any:
    try:
        return _STRICT_DECODER.decode(_read(path))
    except ValueError as exc:
        raise Invalid(f"{path} is not valid JSON: {exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)  # exits with status 2 on usage errors
    try:
        outcome = _run(args)
    except UsageError as exc:
        print(f"usage error: {exc}", file=sys.stderr)
        return 2
    except Invalid as exc:
        print(f"INVALID: {exc}")
        return 1
    print(f"OK: {outcome.message}")
    for note in outcome.notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
