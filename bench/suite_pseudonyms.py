"""Suite `pseudonyms`: the gateway's per-recipient pseudonyms against raw HMAC-SHA-256 and
Microsoft Presidio's anonymizer operators (hash with a fixed salt, encrypt), per second.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import random
import time
import uuid
from collections.abc import Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac

from bench.common import Deadline, Section, Table, ensure_module, fmt_rate, median, spread
from policies.pseudonyms import Keyring, pseudonym_domain, pseudonym_for

ROUND_SECONDS = 0.25  # each round of each method lasts about this long

PROPERTIES = (
    # method, keyed, deterministic, reversible by the gateway only, per-recipient, rotation
    ("gateway Keyring (HKDF per domain + HMAC-SHA-256)",
     "yes: HMAC under a per-domain key derived from a master key only the gateway holds",
     "yes (stable per recipient)",
     "yes: resolved by lookup in pseudonym_index; nobody without the master key can link or "
     "reverse",
     "yes: HKDF info binds agreement/recipient, domains unlinkable",
     "yes: versioned keys (psn<v>_ prefix), grace period, old->new map for recipients"),
    ("raw HMAC-SHA-256",
     "yes", "yes", "not reversible (a lookup table is yours to keep)",
     "only if you derive a key per recipient yourself", "do it yourself"),
    ("Presidio hash operator, fixed salt",
     "only as secret as the salt: sha256(text || salt), not a MAC", "yes, with a fixed salt "
     "(the default random salt per call gives a new value every time)",
     "not reversible; low-entropy inputs (PNC, names) fall to a dictionary once the salt leaks",
     "only by managing one salt per recipient yourself", "none: a new salt relinks nothing"),
    ("Presidio encrypt operator (AES-CBC)",
     "yes (AES key)", "no: random IV per call, the same person gets a new token every time",
     "reversible by anyone holding the key (DeanonymizeEngine); unauthenticated CBC",
     "only with a key per recipient", "none: re-encrypt everything"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("pseudonyms suite")
    group.add_argument("--pseudonym-rounds", type=int, default=5,
                       help="rounds per method (median reported)")


def run(args: argparse.Namespace) -> Section:
    ensure_module("presidio_anonymizer", "presidio-anonymizer")
    from presidio_anonymizer import AnonymizerEngine
    from presidio_anonymizer.entities import OperatorConfig, RecognizerResult
    from presidio_anonymizer.operators import Encrypt, Hash

    section = Section("pseudonyms")
    rng = random.Random(2015)
    subjects = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(2000)]
    master = os.urandom(32)
    domain_key = os.urandom(32)
    salt = os.urandom(32)
    aes_key = os.urandom(16)
    domain = pseudonym_domain("pre-cj-referral", "VSP-HOUSING")
    ring = Keyring({1: master}, current=1)
    engine = AnonymizerEngine()
    hash_op, encrypt_op = Hash(), Encrypt()
    hash_params = {"hash_type": "sha256", "salt": salt}
    encrypt_params = {"key": aes_key}

    def stdlib_hmac(subject: str) -> bytes:
        return hmac.new(domain_key, subject.encode(), hashlib.sha256).digest()

    def cryptography_hmac(subject: str) -> bytes:
        mac = crypto_hmac.HMAC(domain_key, hashes.SHA256())
        mac.update(subject.encode())
        return mac.finalize()

    def through_engine(operator: str, params: dict) -> Callable[[str], str]:
        config = {"SUBJECT_ID": OperatorConfig(operator, params)}

        def anonymise(subject: str) -> str:
            found = [RecognizerResult("SUBJECT_ID", 0, len(subject), 1.0)]
            return engine.anonymize(text=subject, analyzer_results=found, operators=config).text

        return anonymise

    methods: dict[str, Callable[[str], object]] = {
        "raw HMAC-SHA-256 (stdlib hmac)": stdlib_hmac,
        "raw HMAC-SHA-256 (cryptography, as the Keyring uses)": cryptography_hmac,
        "Keyring.pseudonym (domain key cached)": lambda s: ring.pseudonym(domain, s),
        "pseudonym_for (HKDF derivation on every call)": lambda s: pseudonym_for(
            master, 1, domain, s),
        "Presidio Hash operator (sha256, fixed salt)": lambda s: hash_op.operate(s, hash_params),
        "Presidio Encrypt operator (AES-128-CBC)": lambda s: encrypt_op.operate(
            s, encrypt_params),
        "Presidio AnonymizerEngine + hash": through_engine("hash", hash_params),
        "Presidio AnonymizerEngine + encrypt": through_engine("encrypt", encrypt_params),
    }
    samples = {name: fn(subjects[0]) for name, fn in methods.items()}
    sizes = {name: _batch_size(fn, subjects) for name, fn in methods.items()}
    rates: dict[str, list[float]] = {name: [] for name in methods}
    deadline = Deadline(120)
    for round_no in range(args.pseudonym_rounds):  # interleaved: noise hits every method alike
        if round_no >= 3 and deadline.passed():
            break
        for name, fn in methods.items():
            n = sizes[name]
            began = time.perf_counter()
            for i in range(n):
                fn(subjects[i % len(subjects)])
            rates[name].append(n / (time.perf_counter() - began))

    baseline = median(rates["raw HMAC-SHA-256 (stdlib hmac)"])
    table = Table(
        f"Pseudonyms per second (one subject id each; median of {len(rates[next(iter(rates))])}"
        " interleaved rounds)",
        ["method", "per second", "rounds", "x raw HMAC", "us each", "output example"],
    )
    for name in methods:
        rate = median(rates[name])
        example = samples[name]
        shown = example.hex() if isinstance(example, bytes) else str(example)
        table.add(name, fmt_rate(rate), spread(rates[name]), f"{rate / baseline:.2f}",
                  f"{1e6 / rate:.1f}", f"`{shown[:24]}...` ({len(shown)} chars)")
    table.notes.append(
        "Presidio operators are called with the subject's internal UUID as the whole text; "
        "through AnonymizerEngine the entity span is given as a RecognizerResult (no "
        "analyzer), so only the anonymizer's own overhead is measured.")
    properties = Table("What each offers",
                       ["method", "keyed", "deterministic", "reversible by the gateway only",
                        "per-recipient domains", "rotation"])
    for row in PROPERTIES:
        properties.add(*row)
    section.tables += [table, properties]
    return section


def _batch_size(fn: Callable[[str], object], subjects: list[str]) -> int:
    """Calls per round so that one round lasts about ROUND_SECONDS (within 200..200,000)."""
    began = time.perf_counter()
    for i in range(200):
        fn(subjects[i])
    each = (time.perf_counter() - began) / 200
    return max(200, min(200_000, int(ROUND_SECONDS / each)))
