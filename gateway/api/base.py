"""The blueprint class every resource uses: query strings and bodies are strict."""

from __future__ import annotations

import flask_smorest
from webargs.flaskparser import FlaskParser


class StrictParser(FlaskParser):
    # None: let each schema's Meta.unknown (RAISE) decide, in the query string too.
    DEFAULT_UNKNOWN_BY_LOCATION = dict.fromkeys(FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION)


class ApiBlueprint(flask_smorest.Blueprint):
    ARGUMENTS_PARSER = StrictParser()
