"""JSON responses encoded by orjson read exactly as Flask's own encoder would have them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

from flask import Flask
from flask.json.provider import DefaultJSONProvider

from gateway.json_provider import OrjsonProvider

VALUES = {
    "name": "Zoë O\u2019Brien",
    "nested": {"b": [1, None, True], "a": "\x1f\u2028"},
    "when": datetime(2026, 11, 30, 12, 0, tzinfo=UTC),
    "amount": Decimal("1.50"),
    "huge": 2**70,  # beyond orjson: encoded by the stdlib instead
}


def test_the_gateway_answers_with_the_orjson_provider(app: Flask) -> None:
    assert isinstance(app.json, OrjsonProvider)


def test_output_decodes_to_what_flasks_encoder_gives() -> None:
    app = Flask(__name__)
    ours, flasks = OrjsonProvider(app), DefaultJSONProvider(app)
    for value in (VALUES, {k: v for k, v in VALUES.items() if k != "huge"}):
        body = ours.response(value).get_data()
        assert json.loads(body) == json.loads(flasks.response(value).get_data())
        assert body.endswith(b"\n")


def test_compact_sorted_utf8() -> None:
    app = Flask(__name__)  # the provider holds it weakly
    body = OrjsonProvider(app).response({"b": "é", "a": 1}).get_data()
    assert body == '{"a":1,"b":"é"}\n'.encode()


def test_debug_indentation_falls_back_to_flasks_encoder() -> None:
    app = Flask(__name__)
    app.debug = True
    body = OrjsonProvider(app).response({"a": 1}).get_data(as_text=True)
    assert body == '{\n  "a": 1\n}\n'
