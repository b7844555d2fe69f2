"""Agreement versions in the database: history kept, bad files never half-load, the version
in force is the one decisions cite."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from gateway.agreement_store import AgreementLoadError, load_agreement_files, retire_agreement
from gateway.models import AgreementVersion

CORE = Path(__file__).resolve().parents[2] / "policies" / "agreements" / "core-iom.yaml"


def in_force(app) -> dict[str, int]:
    store = app.extensions["gateway.agreements"]
    store.forget()
    return {a.id: a.version for a in store.current().agreements}


def bumped(tmp_path: Path, version: int, **replace: str) -> Path:
    text = CORE.read_text()
    current = next(line for line in text.splitlines() if line.startswith("version:"))
    text = text.replace(current, f"version: {version}", 1)
    for old, new in replace.items():
        text = text.replace(old, new)
    path = tmp_path / f"core-iom-v{version}.yaml"
    path.write_text(text)
    return path


def test_new_version_goes_into_force_and_history_is_kept(app, db, tmp_path):
    before = in_force(app)["core-iom"]
    assert load_agreement_files(db, [bumped(tmp_path, before + 1)]) == [
        f"core-iom@{before + 1}: loaded"
    ]
    db.commit()
    assert in_force(app)["core-iom"] == before + 1
    versions = db.scalars(
        sa.select(AgreementVersion.version).where(AgreementVersion.agreement_id == "core-iom")
    ).all()
    assert set(versions) >= {before, before + 1}


def test_reloading_the_same_version_is_a_no_op_but_changed_content_needs_a_new_version(
    app, db, tmp_path
):
    current = in_force(app)["core-iom"]
    same = bumped(tmp_path, current)
    assert load_agreement_files(db, [same]) == [f"core-iom@{current}: unchanged"]
    changed = bumped(tmp_path, current, **{"title:": "title: Changed -"})
    with pytest.raises(AgreementLoadError, match="raise the version number"):
        load_agreement_files(db, [changed])


def test_a_bad_file_loads_nothing_and_the_version_in_force_stays(app, db, tmp_path):
    current = in_force(app)["core-iom"]
    good = bumped(tmp_path, current + 1)
    bad = tmp_path / "broken.yaml"
    bad.write_text("id: broken\nversion: 1\ngrants: [\n")
    with pytest.raises(AgreementLoadError) as error:
        load_agreement_files(db, [good, bad])
    assert any("broken.yaml" in str(problem) for problem in error.value.problems)
    db.rollback()
    assert in_force(app)["core-iom"] == current


def test_an_older_version_is_refused(app, db, tmp_path):
    current = in_force(app)["core-iom"]
    load_agreement_files(db, [bumped(tmp_path, current + 2)])
    with pytest.raises(AgreementLoadError, match="older than loaded version"):
        load_agreement_files(db, [bumped(tmp_path, current + 1)])


def test_retiring_takes_an_agreement_out_of_force(app, db, api):
    assert "dv-perpetrator-programme" in in_force(app)
    assert retire_agreement(db, "dv-perpetrator-programme") >= 1
    db.commit()
    assert "dv-perpetrator-programme" not in in_force(app)
    response = api("WMP", "get", "/api/v1/subjects", purpose="dv-perpetrator-programme")
    assert response.status_code == 400  # its purpose is no longer one any agreement names
