"""C2SP checkpoints: format, signatures, and that any byte change is caught."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit.checkpoint import (
    Checkpoint,
    CheckpointError,
    SignatureError,
    key_id,
    parse_checkpoint,
    sign_checkpoint,
    verify_checkpoint,
)
from tests.audit.helpers import KEY_NAME, ORIGIN, OTHER_KEY, PUBLIC_KEY, SIGNER

ROOT = hashlib.sha256(b"root").digest()


@pytest.fixture
def checkpoint() -> Checkpoint:
    return sign_checkpoint(SIGNER.private_key, KEY_NAME, ORIGIN, 1042, ROOT, 1767605400)


def test_layout(checkpoint: Checkpoint) -> None:
    body = f"{ORIGIN}\n1042\n{base64.b64encode(ROOT).decode()}\ntime 1767605400\n"
    assert checkpoint.note.startswith(body + "\n\u2014 " + KEY_NAME + " ")
    assert checkpoint.note.endswith("\n") and checkpoint.note.count("\n") == 6
    assert checkpoint.body == body
    assert (checkpoint.origin, checkpoint.tree_size, checkpoint.root_hash,
            checkpoint.timestamp) == (ORIGIN, 1042, ROOT, 1767605400)
    assert parse_checkpoint(checkpoint.note) == checkpoint
    assert verify_checkpoint(checkpoint.note, PUBLIC_KEY, KEY_NAME) == checkpoint
    assert verify_checkpoint(checkpoint.note, PUBLIC_KEY) == checkpoint


def test_verifies_with_cryptography_alone(checkpoint: Checkpoint) -> None:
    """What an auditor with any Ed25519 library does, following the signed-note spec."""
    note = checkpoint.note.encode()
    body, _, signature_line = note.rpartition(b"\n\n")
    body += b"\n"
    dash, name, encoded = signature_line.rstrip(b"\n").split(b" ")
    assert dash == "\u2014".encode() and name == KEY_NAME.encode()
    raw = base64.b64decode(encoded)
    public = PUBLIC_KEY.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert raw[:4] == hashlib.sha256(name + b"\n\x01" + public).digest()[:4]
    Ed25519PublicKey.from_public_bytes(public).verify(raw[4:], body)
    with pytest.raises(InvalidSignature):
        Ed25519PublicKey.from_public_bytes(public).verify(raw[4:], body.replace(b"1042", b"1043"))


def test_key_id_matches_the_go_sumdb_note_vector() -> None:
    """golang.org/x/mod/sumdb/note's documented example key and signed note."""
    vkey = base64.b64decode("ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")
    public = Ed25519PublicKey.from_public_bytes(vkey[1:])
    assert key_id("PeterNeumann", public).hex() == "c74f20a3"
    text = (b"If you think cryptography is the answer to your problem,\n"
            b"then you don't know what your problem is.\n")
    signature = base64.b64decode("x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2p"
                                 "ZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=")
    assert signature[:4].hex() == "c74f20a3"
    public.verify(signature[4:], text)


def test_any_character_change_breaks_it(checkpoint: Checkpoint) -> None:
    note = checkpoint.note
    for i, char in enumerate(note):
        for replacement in {chr(ord(char) ^ 1), "\n", "A"} - {char}:
            changed = note[:i] + replacement + note[i + 1:]
            with pytest.raises(CheckpointError):
                verify_checkpoint(changed, PUBLIC_KEY, KEY_NAME)
    for changed in (note + "junk\n", note + "\n", note[:-1], "\n" + note, note + note):
        with pytest.raises(CheckpointError):
            verify_checkpoint(changed, PUBLIC_KEY, KEY_NAME)


def test_any_byte_flip_breaks_it(checkpoint: Checkpoint) -> None:
    data = checkpoint.note.encode()
    for i in range(len(data)):
        changed = data[:i] + bytes([data[i] ^ 0x40]) + data[i + 1:]
        with pytest.raises(CheckpointError):
            verify_checkpoint(changed, PUBLIC_KEY, KEY_NAME)


def test_wrong_key_and_forgeries(checkpoint: Checkpoint) -> None:
    other = OTHER_KEY.public_key()
    with pytest.raises(SignatureError, match="wrong key id"):
        verify_checkpoint(checkpoint.note, other, KEY_NAME)
    with pytest.raises(SignatureError, match="no signature"):
        verify_checkpoint(checkpoint.note, PUBLIC_KEY, "someone.else/log")
    forged = sign_checkpoint(OTHER_KEY, KEY_NAME, ORIGIN, 1042, bytes(32), 1767605400)
    with pytest.raises(SignatureError):
        verify_checkpoint(forged.note, PUBLIC_KEY, KEY_NAME)
    # Our key id with another key's signature: a known key that fails rejects the note.
    body, _, line = checkpoint.note.rpartition("\n\n")
    raw = base64.b64decode(line.split(" ")[2])
    bad = raw[:4] + OTHER_KEY.sign((body + "\n").encode())
    spliced = f"{body}\n\n\u2014 {KEY_NAME} {base64.b64encode(bad).decode()}\n"
    with pytest.raises(SignatureError, match="does not verify"):
        verify_checkpoint(spliced, PUBLIC_KEY, KEY_NAME)


def test_unknown_signatures_are_ignored(checkpoint: Checkpoint) -> None:
    witness = sign_checkpoint(OTHER_KEY, "witness.example", ORIGIN, 1042, ROOT, 1767605400)
    cosigned = checkpoint.note + witness.note.rpartition("\n\n")[2]
    assert verify_checkpoint(cosigned, PUBLIC_KEY, KEY_NAME).key_name == KEY_NAME
    assert verify_checkpoint(cosigned, OTHER_KEY.public_key()).key_name == "witness.example"


@pytest.mark.parametrize("text", [
    "",
    "origin\n1\n",
    "origin\n01\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n\u2014 k AAAAAA==\n",
    "origin\n1\nAAAA\n\n\u2014 k AAAAAA==\n",
    "origin\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n\n\u2014 k AAAAAA==\n",
    "origin\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\ntime x\n\n\u2014 k AAAAAA==\n",
    "origin\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n- k AAAAAA==\n",
    "origin\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n\u2014 k+1 AAAAAA==\n",
    "origin\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n\u2014 k AAAA\n",
    "origin\r\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n\u2014 k AAAAAA==\n",
])
def test_malformed(text: str) -> None:
    with pytest.raises(CheckpointError):
        parse_checkpoint(text)


def test_json_file_form(checkpoint: Checkpoint) -> None:
    text = checkpoint.to_json()
    assert Checkpoint.from_json(text) == checkpoint
    assert '"public_key_id": "' + checkpoint.key_id.hex() in text
    with pytest.raises(CheckpointError):
        Checkpoint.from_json(text.replace(checkpoint.key_id.hex(), "00000000"))
    with pytest.raises(CheckpointError):
        Checkpoint.from_json("{}")


def test_extension_lines_are_kept_and_signed() -> None:
    body = f"{ORIGIN}\n3\n{base64.b64encode(ROOT).decode()}\ntime 5\nother ext\n"
    signature = key_id(KEY_NAME, PUBLIC_KEY) + SIGNER.private_key.sign(body.encode())
    note = f"{body}\n\u2014 {KEY_NAME} {base64.b64encode(signature).decode()}\n"
    parsed = verify_checkpoint(note, PUBLIC_KEY, KEY_NAME)
    assert parsed.timestamp == 5 and parsed.extensions == ("other ext",)
    with pytest.raises(SignatureError):
        verify_checkpoint(note.replace("other ext", "other exu"), PUBLIC_KEY, KEY_NAME)
