"""Tamper-evident audit log of the IOM partner gateway.

Every data access becomes one `AuditEvent` (``audit.events``), recorded in the same
transaction as the access (``audit.record``). A separate sealer orders committed events
into an RFC 9162 Merkle tree and signs C2SP checkpoints (``audit.seal``), so that an
auditor can later prove, with ``python -m audit.verify`` and only the public key, that
an export is complete and unaltered.

This package root deliberately imports nothing: ``audit.verify`` must run where only the
standard library and ``cryptography`` are installed, and importing a submodule always
imports this file first.
"""
