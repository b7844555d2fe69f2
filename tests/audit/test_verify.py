"""`python -m audit.verify`: exports, receipts and checkpoint consistency, and tampering."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from audit import query
from audit.checkpoint import public_key_pem, sign_checkpoint
from audit.events import canonical_json, leaf_hash
from audit.verify import main
from tests.audit.conftest import create_audit_schema, make_engine
from tests.audit.helpers import KEY_NAME, ORIGIN, OTHER_KEY, PUBLIC_KEY, T0, record_many, seal_all

REPO = Path(__file__).resolve().parents[2]
SIZE = 40


@dataclass
class Files:
    dir: Path
    events: Path
    checkpoint: Path
    key: Path
    lines: list[str]

    def run_receipt(self, text: str) -> tuple[int, str]:
        path = self.dir / "receipt.json"
        path.write_text(text)
        return run_main(["--receipt", str(path), "--public-key", str(self.key)])

    def run(self, *extra: str, events: list[str] | None = None) -> tuple[int, str]:
        path = self.events
        if events is not None:
            path = self.dir / "changed.jsonl"
            path.write_text("".join(events), encoding="utf-8")
        args = ["--events", str(path), "--checkpoint", str(self.checkpoint),
                "--public-key", str(self.key), *extra]
        return run_main(args)


def run_main(args: list[str]) -> tuple[int, str]:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            code = main(args)
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
    return code, out.getvalue()


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> tuple[sa.Engine, Path]:
    tmp = tmp_path_factory.mktemp("verify")
    engine = make_engine(f"sqlite:///{tmp / 'log.db'}")
    create_audit_schema(engine)
    with Session(engine) as session:
        record_many(session, 25)
        seal_all(session)
        record_many(session, SIZE - 25, start=25)
        seal_all(session, T0 + timedelta(minutes=1))
        session.commit()
    yield engine, tmp
    engine.dispose()


@pytest.fixture
def files(log: tuple[sa.Engine, Path], tmp_path: Path) -> Files:
    engine, _ = log
    with Session(engine) as session:
        events = tmp_path / "export.jsonl"
        with events.open("w", encoding="utf-8") as out:
            query.write_export(session, out)
        checkpoint = query.latest_checkpoint(session)
    (tmp_path / "checkpoint.json").write_text(checkpoint.to_json(), encoding="utf-8")
    (tmp_path / "key.pem").write_bytes(public_key_pem(PUBLIC_KEY))
    lines = events.read_text(encoding="utf-8").splitlines(keepends=True)
    return Files(tmp_path, events, tmp_path / "checkpoint.json", tmp_path / "key.pem", lines)


def edit(line: str, **changes: object) -> str:
    entry = json.loads(line)
    entry["event"].update(changes)
    return json.dumps(entry, ensure_ascii=False) + "\n"


def rehash(line: str) -> str:
    entry = json.loads(line)
    entry["leaf_hash"] = leaf_hash(canonical_json(entry["event"])).hex()
    return json.dumps(entry) + "\n"


def test_clean_export_verifies(files: Files) -> None:
    code, out = files.run()
    assert code == 0, out
    assert f"OK: export of {SIZE} events matches the signed checkpoint at size {SIZE}" in out
    assert files.run("--key-name", KEY_NAME)[0] == 0


def test_changed_field_is_located(files: Files) -> None:
    lines = list(files.lines)
    lines[17] = edit(lines[17], agency="MI5")
    code, out = files.run(events=lines)
    assert code == 1 and "seq 17: leaf hash does not match event" in out


def test_changed_field_with_recomputed_leaf_breaks_the_root(files: Files) -> None:
    lines = list(files.lines)
    lines[17] = rehash(edit(lines[17], purpose="curiosity"))
    code, out = files.run(events=lines)
    assert code == 1 and f"root at size {SIZE} does not match checkpoint" in out


def test_deleted_event_is_located(files: Files) -> None:
    code, out = files.run(events=files.lines[:9] + files.lines[10:])
    assert code == 1 and "seq 9 missing" in out


def test_swapped_events_are_located(files: Files) -> None:
    lines = list(files.lines)
    lines[9], lines[10] = lines[10], lines[9]
    code, out = files.run(events=lines)
    assert code == 1 and "seq 9 appears after 10" in out
    # Swapping only the event bodies (seq and leaf hash left in place).
    lines = list(files.lines)
    a, b = json.loads(lines[5]), json.loads(lines[6])
    a["event"], b["event"] = b["event"], a["event"]
    code, out = files.run(events=[*lines[:5], json.dumps(a) + "\n", json.dumps(b) + "\n",
                                  *lines[7:]])
    assert code == 1 and "seq 5: leaf hash does not match event" in out


def test_duplicate_and_reordered_seqs(files: Files) -> None:
    lines = list(files.lines)
    code, out = files.run(events=[*lines[:4], lines[3], *lines[4:]])
    assert code == 1 and "seq 3 appears twice" in out
    code, out = files.run(events=[*lines[:8], lines[2], *lines[8:]])
    assert code == 1 and "seq 2 appears after 7" in out


def test_truncated_tail_is_located(files: Files) -> None:
    code, out = files.run(events=files.lines[:SIZE - 3])
    assert code == 1 and f"seq {SIZE - 3} missing" in out


def test_forged_checkpoints(files: Files) -> None:
    signed = query.Checkpoint.from_json(files.checkpoint.read_text())
    forged = sign_checkpoint(OTHER_KEY, KEY_NAME, ORIGIN, SIZE, signed.root_hash, 1)
    files.checkpoint.write_text(forged.to_json())
    code, out = files.run()
    assert code == 1 and "checkpoint signature invalid" in out
    # Edit the root in the signed note.
    root_line = signed.note.split("\n")[2]
    other_root = root_line.replace(root_line[0], "A" if root_line[0] != "A" else "B", 1)
    files.checkpoint.write_text(json.dumps({"note": signed.note.replace(root_line, other_root),
                                            "public_key_id": signed.key_id.hex()}))
    code, out = files.run()
    assert code == 1 and "checkpoint signature invalid" in out


def test_longer_export_verifies_its_prefix(files: Files, log) -> None:
    engine, _ = log
    with Session(engine) as session:
        checkpoint = query.checkpoint_at(session, 25)
    files.checkpoint.write_text(checkpoint.to_json())
    code, out = files.run()
    assert code == 0, out
    assert "checkpoint covers only the first 25" in out


def test_usage_errors_exit_2(files: Files) -> None:
    assert run_main([])[0] == 2
    assert run_main(["--events", str(files.events), "--public-key", str(files.key)])[0] == 2
    assert files.run("--public-key", str(files.dir / "missing.pem"))[0] == 2
    code, _ = run_main(["--events", str(files.dir / "none.jsonl"), "--checkpoint",
                        str(files.checkpoint), "--public-key", str(files.key)])
    assert code == 2


def receipt_of(log) -> dict:  # type: ignore[no-untyped-def]
    """The receipt of seq 11, as the gateway hands it to an auditor."""
    engine, _ = log
    with Session(engine) as session:
        return query.receipt(session, 11)


def test_receipt_mode(files: Files, log) -> None:
    receipt = receipt_of(log)
    code, out = files.run_receipt(json.dumps(receipt))
    assert code == 0 and "seq 11 is included" in out
    for change in ({"seq": 12}, {"event": {**receipt["event"], "status": 500}},
                   {"inclusion_proof": receipt["inclusion_proof"][:-1]},
                   {"checkpoint": receipt["checkpoint"].replace("\n40\n", "\n41\n")}):
        code, out = files.run_receipt(json.dumps({**receipt, **change}))
        assert code == 1, (change, out)


def test_nan_or_infinity_in_place_of_null_is_refused(files: Files, log) -> None:
    """An encoder may write NaN or Infinity back as null, so the edited event would hash as
    the signed one while an auditor's parser reads nan or inf."""
    for constant in ("NaN", "Infinity", "-Infinity"):
        lines = list(files.lines)
        assert ":null" in lines[3]
        lines[3] = lines[3].replace(":null", f":{constant}", 1)
        code, out = files.run(events=lines)
        assert code == 1, out
        assert f"export line 4 is not a valid entry: {constant} is not a JSON value" in out
    code, out = files.run_receipt(json.dumps(receipt_of(log)).replace(": null", ": NaN", 1))
    assert code == 1 and "NaN is not a JSON value" in out


def test_float_in_place_of_integer_is_refused(files: Files) -> None:
    lines = list(files.lines)
    lines[3] = re.sub(r'"duration_us":(\d+)', r'"duration_us":\1.0', lines[3], count=1)
    code, out = files.run(events=lines)
    assert code == 1 and "seq 3: export line is not valid: float" in out, out


def test_repeated_key_is_refused(files: Files, log) -> None:
    """A reader that keeps the first of two values would see what was not verified."""
    lines = list(files.lines)
    lines[3] = lines[3].replace('"agency":', '"agency":"FORGED","agency":', 1)
    code, out = files.run(events=lines)
    assert code == 1 and "seq 3: export line is not valid: an object repeats a key" in out
    forged = json.dumps(receipt_of(log)).replace('"agency": ', '"agency": "FORGED", "agency": ', 1)
    code, out = files.run_receipt(forged)
    assert code == 1 and "an object repeats a key" in out


def test_reformatted_export_verifies_through_the_full_check(files: Files) -> None:
    lines = [json.dumps(json.loads(line)) + "\n" for line in files.lines]
    assert lines != files.lines
    code, out = files.run(events=lines)
    assert code == 0, out


def test_consistency_mode(files: Files, log) -> None:
    engine, _ = log
    with Session(engine) as session:
        old, new = query.checkpoint_at(session, 25), query.latest_checkpoint(session)
        proof = query.consistency_proof(session, 25, SIZE)
    (files.dir / "old.checkpoint").write_text(old.to_json())
    (files.dir / "new.checkpoint").write_text(new.note)  # the bare note works too
    proof_file = files.dir / "proof.json"
    proof_file.write_text(json.dumps({"size1": 25, "size2": SIZE,
                                      "proof": [p.hex() for p in proof]}))
    args = ["--consistency", str(files.dir / "old.checkpoint"), str(files.dir / "new.checkpoint"),
            "--proof", str(proof_file), "--public-key", str(files.key)]
    code, out = run_main(args)
    assert code == 0 and f"size {SIZE} extends checkpoint at size 25" in out
    proof_file.write_text(json.dumps([p.hex() for p in proof[:-1]]))
    assert run_main(args)[0] == 1
    swapped = [args[0], args[2], args[1], *args[3:]]
    proof_file.write_text(json.dumps([p.hex() for p in proof]))
    code, out = run_main(swapped)
    assert code == 1 and "swapped" in out


def test_runs_with_only_the_stdlib_and_cryptography(files: Files, tmp_path: Path) -> None:
    """A copy of the stdlib-only modules, in an isolated interpreter where any other
    third-party import (sqlalchemy above all) fails."""
    package = tmp_path / "isolated" / "audit"
    package.mkdir(parents=True)
    for name in ("__init__.py", "events.py", "merkle.py", "checkpoint.py", "verify.py"):
        shutil.copy(REPO / "audit" / name, package / name)
    script = textwrap.dedent(f"""
        import importlib.abc, runpy, sys
        ALLOWED = set(sys.stdlib_module_names) | {{"audit", "cryptography", "_cffi_backend",
                                                  "_openssl"}}
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] not in ALLOWED:
                    raise ImportError(f"blocked import of {{name}}")
        sys.meta_path.insert(0, Block())
        sys.path.insert(0, {str(package.parent)!r})
        sys.argv = ["audit.verify", *{[
            "--events", str(files.events), "--checkpoint", str(files.checkpoint),
            "--public-key", str(files.key)]!r}]
        try:
            runpy.run_module("audit.verify", run_name="__main__")
        finally:
            assert "sqlalchemy" not in sys.modules
            assert sys.modules["audit.events"].__file__.startswith({str(package)!r})
    """)
    result = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: export of 40 events" in result.stdout
    second = subprocess.run(
        [sys.executable, "-m", "audit.verify", "--events", str(files.events)],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert second.returncode == 2  # usage error, through the real entry point


def test_checkpoint_times_increase(log) -> None:
    engine, _ = log
    with Session(engine) as session:
        sizes = [c for c in range(SIZE + 1) if query.checkpoint_at(session, c)]
        stamps = [query.checkpoint_at(session, c).timestamp for c in sizes]
    assert sizes == [25, SIZE]
    assert stamps == sorted(set(stamps)) and stamps[0] == int(T0.timestamp())
