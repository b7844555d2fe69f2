"""Signed tree heads as C2SP tlog-checkpoint signed notes (Ed25519).

Why this format: it is the one transparency-log tooling (Go's ``sumdb/note``, Sigstore,
witnesses) already reads, it is plain text an auditor can print, and the signature covers
exactly the bytes shown. A checkpoint looks like::

    iom-gateway.example/audit
    1042
    CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=
    time 1767225600

    \u2014 iom-gateway.example/audit Az3grlgt...base64(key id || signature)...

Body: origin, tree size (decimal, no leading zeroes), standard padded base64 of the
RFC 9162 root hash, then extension lines, each line ending in a newline. We carry the
signing time as the extension line ``time <unix seconds>``: tooling that ignores
extension lines still reads the checkpoint, and the time is covered by the signature.
After a blank line come signature lines ``\u2014 <key name> <base64(key id || sig)>``
where the key id is the first 4 bytes of SHA-256(key name || 0x0A || 0x01 || raw 32-byte
Ed25519 public key) and the Ed25519 signature covers the body bytes.

Standard library and ``cryptography`` only: ``audit.verify`` imports this module.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from typing import NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

EM_DASH = "\u2014"
ED25519_TYPE = b"\x01"
MAX_SIGNATURES = 64
_DECIMAL = re.compile(r"0|[1-9][0-9]*")


class CheckpointError(ValueError):
    """A checkpoint is malformed or does not verify; the message says which and where."""


class SignatureError(CheckpointError):
    """The checkpoint is well formed but not validly signed by the expected key."""


@dataclass(frozen=True)
class Checkpoint:
    """A parsed checkpoint; `key_name`, `key_id` and `signature` are the log's signature."""

    origin: str
    tree_size: int
    root_hash: bytes
    timestamp: int | None
    key_name: str
    key_id: bytes
    note: str
    signature: bytes = b""
    extensions: tuple[str, ...] = ()

    @property
    def body(self) -> str:
        return self.note[: self.note.rindex("\n\n") + 1]

    def to_json(self) -> str:
        """The file form: the note verbatim plus the key id that signed it."""
        return json.dumps({"note": self.note, "public_key_id": self.key_id.hex()},
                          ensure_ascii=False, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> Checkpoint:
        try:
            data = json.loads(text)
            note, key_id_hex = data["note"], data["public_key_id"]
            wanted = bytes.fromhex(key_id_hex)
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"not a checkpoint JSON file: {exc}") from None
        checkpoint = parse_checkpoint(note)
        lines = [s for s in _signature_lines(note) if s[1] == wanted]
        if not lines:
            raise CheckpointError(f"no signature line with key id {key_id_hex} in the note")
        name, key, sig = lines[0]
        return _with_signature(checkpoint, name, key, sig)


class CheckpointSigner(NamedTuple):
    """The log's signing identity: a note key name and its Ed25519 private key."""

    key_name: str
    private_key: Ed25519PrivateKey

    @property
    def key_id(self) -> bytes:
        return key_id(self.key_name, self.private_key.public_key())


def key_id(key_name: str, public_key: Ed25519PublicKey) -> bytes:
    """signed-note key id: SHA-256(name || 0x0A || 0x01 || raw public key)[:4]."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(key_name.encode() + b"\n" + ED25519_TYPE + raw).digest()[:4]


def checkpoint_body(origin: str, size: int, root: bytes, timestamp: int) -> str:
    _check_name("origin", origin)
    if size < 0 or len(root) != 32 or timestamp < 0:
        raise CheckpointError("size and timestamp must be >= 0 and the root 32 bytes")
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\ntime {timestamp}\n"


def sign_checkpoint(
    private_key: Ed25519PrivateKey, key_name: str, origin: str, size: int, root: bytes,
    timestamp: int,
) -> Checkpoint:
    _check_name("key name", key_name)
    body = checkpoint_body(origin, size, root, timestamp)
    kid = key_id(key_name, private_key.public_key())
    signature = private_key.sign(body.encode())
    line = f"{EM_DASH} {key_name} {base64.b64encode(kid + signature).decode()}\n"
    return parse_checkpoint(f"{body}\n{line}")


def parse_checkpoint(text: str | bytes) -> Checkpoint:
    """Parse strictly without checking signatures (use `verify_checkpoint` for trust)."""
    text = _as_text(text)
    body, _ = _split_note(text)
    lines = body[:-1].split("\n")
    if len(lines) < 3 or not all(lines):
        raise CheckpointError("a checkpoint body needs origin, size and root lines, none empty")
    origin, size_text, root_text, *extensions = lines
    if not _DECIMAL.fullmatch(size_text):
        raise CheckpointError(f"line 2: tree size {size_text!r} is not a plain decimal")
    root = _b64(root_text, "line 3: root hash")
    if len(root) != 32:
        raise CheckpointError("line 3: root hash is not 32 bytes")
    timestamp, others = None, []
    for number, line in enumerate(extensions, start=4):
        if line.startswith("time "):
            if timestamp is not None or not _DECIMAL.fullmatch(line[5:]):
                raise CheckpointError(f"line {number}: bad or repeated time extension {line!r}")
            timestamp = int(line[5:])
        else:
            others.append(line)
    name, kid, signature = _signature_lines(text)[0]
    return Checkpoint(origin, int(size_text), root, timestamp, name, kid, text, signature,
                      tuple(others))


def verify_checkpoint(
    text: str | bytes, public_key: Ed25519PublicKey, key_name: str | None = None
) -> Checkpoint:
    """Parse and check the signature of `public_key` (under `key_name`, if given).

    Following signed-note rules, signature lines of other keys are ignored; a line of
    this key that fails to verify rejects the whole note. Without `key_name`, a line
    counts as this key's when its key id matches its own name and `public_key`.
    """
    checkpoint = parse_checkpoint(text)
    body = checkpoint.body.encode()
    ours = []
    for name, kid, signature in _signature_lines(checkpoint.note):
        if kid == key_id(key_name or name, public_key) and name == (key_name or name):
            ours.append((name, kid, signature))
    if not ours:
        if key_name is None:
            raise SignatureError("no signature line by the given public key")
        expected = key_id(key_name, public_key).hex()
        found = [k.hex() for n, k, _ in _signature_lines(checkpoint.note) if n == key_name]
        if found:
            raise SignatureError(f"wrong key id: signature by {key_name} has key id "
                                  f"{', '.join(found)}, the public key gives {expected}")
        raise SignatureError(f"no signature line by key {key_name} (key id {expected})")
    for name, _kid, signature in ours:
        if len(signature) != 64:
            raise SignatureError(f"signature by key {name} has the wrong length")
        try:
            public_key.verify(signature, body)
        except InvalidSignature:
            raise SignatureError(f"signature by key {name} does not verify") from None
    return _with_signature(checkpoint, *ours[0])


def load_public_key(data: bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM (SubjectPublicKeyInfo) bytes."""
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, Ed25519PublicKey):
        raise CheckpointError("the public key is not an Ed25519 key")
    return key


def public_key_pem(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _with_signature(checkpoint: Checkpoint, name: str, kid: bytes, sig: bytes) -> Checkpoint:
    return Checkpoint(checkpoint.origin, checkpoint.tree_size, checkpoint.root_hash,
                      checkpoint.timestamp, name, kid, checkpoint.note, sig,
                      checkpoint.extensions)


def _as_text(text: str | bytes) -> str:
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise CheckpointError("a note must be valid UTF-8") from None
    if not isinstance(text, str):
        raise CheckpointError("a note must be text")
    bad = next((c for c in text if c < " " and c != "\n"), None)
    if bad is not None:
        raise CheckpointError(f"control character {bad!r} in note")
    return text


def _split_note(text: str) -> tuple[str, str]:
    """(body including its final newline, signature block) split at the last blank line."""
    if not text.endswith("\n"):
        raise CheckpointError("a note must end with a newline")
    cut = text.rfind("\n\n")
    if cut < 0:
        raise CheckpointError("no blank line before the signature lines")
    signatures = text[cut + 2:]
    if not signatures:
        raise CheckpointError("no signature lines after the last blank line (trailing junk?)")
    return text[: cut + 1], signatures


def _signature_lines(text: str) -> list[tuple[str, bytes, bytes]]:
    _, block = _split_note(text)
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise CheckpointError("too many signature lines")
    out = []
    for line in lines:
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != EM_DASH:
            raise CheckpointError(f"malformed signature line {line!r}")
        _, name, encoded = parts
        _check_name("key name", name)
        raw = _b64(encoded, f"signature of {name}")
        if len(raw) < 5:
            raise CheckpointError(f"signature of {name} is too short")
        out.append((name, raw[:4], raw[4:]))
    return out


def _check_name(what: str, name: str) -> None:
    if not name or "+" in name or any(c.isspace() or c < " " for c in name):
        raise CheckpointError(f"{what} {name!r} must be non-empty, without spaces or '+'")


def _b64(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise CheckpointError(f"{what}: not standard base64") from None
    if base64.b64encode(raw).decode() != text:
        raise CheckpointError(f"{what}: not canonical padded base64")
    return raw
