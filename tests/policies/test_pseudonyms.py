"""Pseudonyms: stable per recipient, unlinkable across recipients, versioned, rotatable."""

from __future__ import annotations

import re

import pytest

from policies.pseudonyms import (
    Keyring,
    pseudonym_domain,
    pseudonym_for,
    pseudonym_version,
)

KEY_1 = bytes(range(32))
KEY_2 = bytes(range(100, 132))
MENTOR = pseudonym_domain("pre-cj-referral", "VSP-MENTOR")
HOUSING = pseudonym_domain("pre-cj-referral", "VSP-HOUSING")
SHAPE = re.compile(r"psn[1-9][0-9]*_[a-z2-7]{26}")


def test_format_carries_the_version_and_128_bits() -> None:
    pseudonym = pseudonym_for(KEY_1, 1, MENTOR, "subj-1")
    assert SHAPE.fullmatch(pseudonym)
    assert pseudonym.startswith("psn1_")
    assert pseudonym_version(pseudonym) == 1
    assert pseudonym_version(pseudonym_for(KEY_2, 12, MENTOR, "subj-1")) == 12
    assert pseudonym_version("subj-1") is None


def test_stable_for_one_recipient() -> None:
    assert pseudonym_for(KEY_1, 1, MENTOR, "subj-1") == pseudonym_for(KEY_1, 1, MENTOR, "subj-1")
    assert pseudonym_for(KEY_1, 1, MENTOR, "subj-1") != pseudonym_for(KEY_1, 1, MENTOR, "subj-2")


def test_unlinkable_across_recipients() -> None:
    mentor = pseudonym_for(KEY_1, 1, MENTOR, "subj-1")
    housing = pseudonym_for(KEY_1, 1, HOUSING, "subj-1")
    assert mentor != housing
    shared = next(i for i, (a, b) in enumerate(zip(mentor, housing, strict=True)) if a != b)
    assert mentor[:shared] == "psn1_"


def test_no_shared_structure_across_recipients_over_many_subjects() -> None:
    """Equal first characters should occur about 1 time in 32, as for unrelated strings."""
    subjects = [f"subj-{n}" for n in range(1000)]
    mentor = [pseudonym_for(KEY_1, 1, MENTOR, s) for s in subjects]
    housing = [pseudonym_for(KEY_1, 1, HOUSING, s) for s in subjects]
    assert not set(mentor) & set(housing)
    same_first = sum(m[5] == h[5] for m, h in zip(mentor, housing, strict=True))
    assert same_first < 80  # expectation ~31; a linkable scheme would give ~1000
    assert len(set(mentor)) == len(subjects)


def test_domains_bind_agreement_and_recipient() -> None:
    other_agreement = pseudonym_domain("dv-perpetrator-programme", "VSP-MENTOR")
    assert pseudonym_for(KEY_1, 1, other_agreement, "s") != pseudonym_for(KEY_1, 1, MENTOR, "s")
    with pytest.raises(ValueError, match="no '/'"):
        pseudonym_domain("a/b", "VSP-MENTOR")


def test_different_across_key_versions_and_keys() -> None:
    v1 = pseudonym_for(KEY_1, 1, MENTOR, "subj-1")
    assert pseudonym_for(KEY_1, 2, MENTOR, "subj-1")[5:] != v1[5:]  # same key, other version
    assert pseudonym_for(KEY_2, 1, MENTOR, "subj-1") != v1


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        pseudonym_for(b"short", 1, MENTOR, "s")
    with pytest.raises(ValueError, match="at least 32 bytes"):
        Keyring({1: b"short"}, current=1)
    with pytest.raises(ValueError, match="current key version 3"):
        Keyring({1: KEY_1}, current=3)


def test_keyring_matches_the_function_and_caches_derivation() -> None:
    ring = Keyring({1: KEY_1, 2: KEY_2}, current=2)
    assert ring.pseudonym(MENTOR, "s") == pseudonym_for(KEY_2, 2, MENTOR, "s")
    assert ring.pseudonym(MENTOR, "s", version=1) == pseudonym_for(KEY_1, 1, MENTOR, "s")
    for n in range(100):
        ring.pseudonym(MENTOR, f"s{n}")
    assert len(ring._domain_keys) == 2  # (1, MENTOR) and (2, MENTOR): derived once each
    assert ring.domain_key(2, MENTOR) is ring.domain_key(2, MENTOR)
    assert "KEY" not in repr(ring) and KEY_1.hex() not in repr(ring)
    with pytest.raises(KeyError):
        ring.pseudonym(MENTOR, "s", version=9)
