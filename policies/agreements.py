"""Loading agreement files: YAML text in, a validated frozen Agreement out, or every problem.

A file is loaded all-or-nothing: either every rule holds and an Agreement is returned, or an
AgreementError lists every problem with its file, line and field path. Lines come from the
YAML node tree (`yaml.compose` marks), so the marshmallow error path "grants.2.fields.1" is
reported on the line where that entry is written.

`known_agencies` is a mapping of agency code to agency kind (as the gateway registers them).
A plain collection of codes is accepted too; kinds are then taken from the demo registry where
it knows the code, and an agency of unknown kind is treated as possibly voluntary-sector, so the
victim-data rule fails closed rather than open.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from marshmallow import ValidationError
from yaml.composer import ComposerError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from policies.model import (
    Agreement,
    AgreementError,
    Conditions,
    Grant,
    Party,
    Problem,
    Purpose,
)
from policies.review import ReviewStatus, review_status
from policies.rules import FieldPath, Finding, check_rules
from policies.schema import AgreementSchema
from policies.vocabulary import DEMO_AGENCIES, expand_field

KnownAgencies = Mapping[str, str] | Collection[str]
MAX_DEPTH = 32

__all__ = [
    "Agreement",
    "AgreementError",
    "Problem",
    "ReviewStatus",
    "agreement_from_document",
    "check_directory",
    "load_agreement_file",
    "load_agreement_text",
    "load_directory",
    "review_status",
]


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps timestamps as text, so marshmallow reports a bad date with its line
    instead of PyYAML raising on the first one (and JSON documents take the same path).

    It also refuses aliases (a few lines of nested aliases expand into millions of nodes for the
    checks to walk) and nesting deeper than MAX_DEPTH (PyYAML recurses once per level, so a deep
    file would end in RecursionError rather than a reported problem)."""

    _depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise ComposerError(None, None, "aliases (*name) are not allowed", event.start_mark)
        if self._depth >= MAX_DEPTH:
            raise ComposerError(None, None, f"nested over {MAX_DEPTH} levels", event.start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_str)


def load_agreement_file(path: str | Path, known_agencies: KnownAgencies) -> Agreement:
    """Load one agreement file; raise AgreementError listing every problem in it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AgreementError([Problem(str(path), None, "", f"cannot read file: {exc}")]) from None
    return load_agreement_text(text, known_agencies, source=str(path))


def load_agreement_text(text: str, known_agencies: KnownAgencies, *, source: str) -> Agreement:
    """Load an agreement from YAML text; `source` names it in problems."""
    try:
        node, data = _parse(text)
    except yaml.YAMLError as exc:
        raise AgreementError([_syntax_problem(source, exc)]) from None
    except ValueError as exc:  # e.g. an integer longer than Python converts (4300 digits)
        raise AgreementError([Problem(source, None, "", f"invalid value: {exc}")]) from None
    if node is None:
        raise AgreementError([Problem(source, 1, "", "the file is empty")])
    duplicates = list(_duplicate_keys(node, ()))
    return _validate(data, _kinds(known_agencies), source, node, duplicates)


def agreement_from_document(
    doc: Mapping[str, Any], known_agencies: KnownAgencies, source: str = "db"
) -> Agreement:
    """Rebuild an agreement from its stored JSON document, with the same checks as a file."""
    return _validate(doc, _kinds(known_agencies), source, None, [])


def check_directory(
    path: str | Path, known_agencies: KnownAgencies
) -> tuple[list[Agreement], list[Problem]]:
    """Load every *.yaml / *.yml file; return the good agreements and every problem found.

    A file with any problem contributes no agreement. Two files with the same agreement id are
    a problem of the later one, since only one version of an agreement may be in force.
    """
    agreements: list[Agreement] = []
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    files = sorted(p for p in Path(path).iterdir() if p.suffix in (".yaml", ".yml"))
    for file in files:
        try:
            agreement = load_agreement_file(file, known_agencies)
        except AgreementError as exc:
            problems.extend(exc.problems)
            continue
        if agreement.id in seen:
            message = f"agreement id {agreement.id!r} is also defined in {seen[agreement.id]}"
            problems.append(Problem(str(file), _id_line(file), "id", message))
            continue
        seen[agreement.id] = str(file)
        agreements.append(agreement)
    return agreements, problems


def load_directory(path: str | Path, known_agencies: KnownAgencies) -> list[Agreement]:
    """All agreements in a directory, or AgreementError if any file has a problem.

    For reloads: the caller keeps its current PolicySet unless the whole directory is good.
    """
    agreements, problems = check_directory(path, known_agencies)
    if problems:
        raise AgreementError(problems)
    return agreements


def _kinds(known: KnownAgencies) -> dict[str, str | None]:
    if isinstance(known, Mapping):
        return dict(known)
    if isinstance(known, str):
        raise TypeError("known_agencies must be a mapping or a collection of codes, not a str")
    return {code: DEMO_AGENCIES.get(code) for code in known}


def _parse(text: str) -> tuple[Node | None, Any]:
    """Compose once and construct from the same node tree, keeping the marks for line lookup."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        return node, (loader.construct_document(node) if node is not None else None)
    finally:
        loader.dispose()


def _syntax_problem(source: str, exc: yaml.YAMLError) -> Problem:
    """Locate a YAML error at the parser's mark, naming where the broken construct began."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return Problem(source, None, "", f"invalid YAML: {exc}")
    mark, context = exc.problem_mark or exc.context_mark, exc.context_mark
    detail = exc.problem or "unreadable"
    if exc.context and context is not None:
        detail = f"{exc.context} (from line {context.line + 1}): {detail}"
    return Problem(source, mark.line + 1 if mark else None, "", f"invalid YAML: {detail}")


def _duplicate_keys(node: Node, at: FieldPath) -> Iterator[Finding]:
    """PyYAML keeps the last of two equal keys silently; an agreement must not."""
    if isinstance(node, MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            name = key.value if isinstance(key, ScalarNode) else None
            if name is not None and name in seen:
                yield (*at, name), f"duplicate key {name!r} (first on line {seen[name]})"
            elif name is not None:
                seen[name] = key.start_mark.line + 1
            yield from _duplicate_keys(value, at + ((name,) if name is not None else ()))
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            yield from _duplicate_keys(item, (*at, i))


def _validate(
    data: Any,
    kinds: dict[str, str | None],
    source: str,
    node: Node | None,
    findings: list[Finding],
) -> Agreement:
    if not isinstance(data, Mapping):
        message = f"an agreement must be a mapping of fields, found {type(data).__name__}"
        raise AgreementError([Problem(source, 1 if node else None, "", message)])
    schema = AgreementSchema()
    loaded: dict[str, Any] = {}
    try:
        loaded = schema.load(data)
    except ValidationError as exc:
        findings = findings + list(_flatten(exc.messages, ()))
    findings = findings + check_rules(data, kinds)
    if findings:
        raise AgreementError(_problems(findings, source, node))
    document = json.dumps(schema.dump(loaded), sort_keys=True, ensure_ascii=False)
    return _build(loaded, source, document)


def _flatten(messages: Any, at: FieldPath) -> Iterator[Finding]:
    if isinstance(messages, Mapping):
        for key, value in messages.items():
            yield from _flatten(value, at if key == "_schema" else (*at, key))
    elif isinstance(messages, list | tuple):
        for message in messages:
            yield from _flatten(message, at)
    else:
        yield at, str(messages)


def _problems(findings: list[Finding], source: str, node: Node | None) -> list[Problem]:
    problems = {
        Problem(source, _line(node, path), ".".join(map(str, path)), message)
        for path, message in findings
    }
    return sorted(problems, key=lambda p: (p.line or 0, p.field, p.message))


def _line(node: Node | None, path: FieldPath) -> int | None:
    """The line of the deepest node on `path` that exists (a missing key: its parent's line)."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in path:
        if isinstance(node, MappingNode):
            match = [(k, v) for k, v in node.value if _is_key(k, part)]
            if not match:
                break
            key, node = match[-1]
            line = key.start_mark.line + 1
        elif isinstance(node, SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _is_key(node: Node, part: str | int) -> bool:
    return isinstance(node, ScalarNode) and node.value == str(part)


def _id_line(file: Path) -> int | None:
    try:
        return _line(_parse(file.read_text(encoding="utf-8"))[0], ("id",))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None


def _build(doc: Mapping[str, Any], source: str, document: str) -> Agreement:
    return Agreement(
        id=doc["id"],
        version=doc["version"],
        title=doc["title"],
        parties=tuple(Party(p["agency"], p["role"]) for p in doc["parties"]),
        purposes=tuple(Purpose(p["code"], p["description"]) for p in doc["purposes"]),
        lawful_basis=tuple(doc["lawful_basis"]),
        valid_from=doc["valid_from"],
        valid_until=doc["valid_until"],
        review_by=doc["review_by"],
        retention=doc["retention"],
        grants=tuple(_grant(g) for g in doc["grants"]),
        source=source,
        document_json=document,
    )


def _grant(doc: Mapping[str, Any]) -> Grant:
    resource = doc["resource"]
    expanded = (name for entry in doc["fields_"] for name in expand_field(resource, entry) or ())
    conditions = doc.get("conditions") or {}
    return Grant(
        id=doc["id"],
        recipients=tuple(dict.fromkeys(doc["recipients"])),
        purposes=tuple(dict.fromkeys(doc["purposes"])),
        resource=resource,
        actions=tuple(dict.fromkeys(doc["actions"])),
        conditions=Conditions(
            cohorts=frozenset(conditions.get("cohorts", ())),
            areas=frozenset(conditions.get("areas", ())),
            min_age=conditions.get("min_age"),
            max_age=conditions.get("max_age"),
            relationships=frozenset(conditions.get("relationships", ())),
        ),
        fields=tuple(dict.fromkeys(expanded)),
        level=doc["level"],
        age_band=doc["age_band"],
    )
