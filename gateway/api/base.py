"""The blueprint class every resource uses: query strings and bodies are strict."""

from __future__ import annotations

import json
from typing import Any

import flask_smorest
from webargs.flaskparser import FlaskParser


class StrictParser(FlaskParser):
    # None: let each schema's Meta.unknown (RAISE) decide, in the query string too.
    DEFAULT_UNKNOWN_BY_LOCATION = dict.fromkeys(FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION)

    def _raw_load_json(self, req):  # type: ignore[no-untyped-def]
        try:
            data = super()._raw_load_json(req)
        except json.JSONDecodeError:
            raise
        except RecursionError:  # "[[[[..." nested deeper than json.loads recurses: a 400, not a 500
            raise json.JSONDecodeError("JSON nested too deeply", "(body)", 0) from None
        except ValueError:  # an integer of over 4,300 digits, which Python will not convert
            raise json.JSONDecodeError("JSON number too long", "(body)", 0) from None
        # "\u0000": PostgreSQL refuses it in text; a 400, not a 503 later. A NUL can only
        # arrive escaped, so bodies without that escape skip the walk.
        if b"\\u0000" in req.get_data(cache=True) and _has_nul(data):
            raise json.JSONDecodeError("NUL characters are not accepted", "(body)", 0)
        return data


def _has_nul(value: Any) -> bool:
    stack = [value]  # iterative: the body may be nested as deep as json.loads allowed
    while stack:
        item = stack.pop()
        if isinstance(item, str) and "\x00" in item:
            return True
        if isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


class ApiBlueprint(flask_smorest.Blueprint):
    ARGUMENTS_PARSER = StrictParser()
