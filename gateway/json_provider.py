"""Flask's JSON responses, encoded by orjson.

Every response body is JSON, and the stdlib encoder (with Flask's sorted keys) was a
measurable share of a subject read. orjson gives the same JSON several times faster: sorted
keys, compact separators. Two differences from Flask's default, both harmless to a JSON
client: non-ASCII characters are sent as UTF-8 rather than \\u escapes, and `indent` (debug
mode) and other stdlib options fall back to Flask's encoder. Values orjson cannot encode
(integers beyond 64 bits) fall back too, so the output never depends on which encoder ran.
"""

from __future__ import annotations

from typing import Any

import orjson
from flask.json.provider import DefaultJSONProvider

_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME  # dates: Flask's format
_COMPACT = {"separators": (",", ":")}


class OrjsonProvider(DefaultJSONProvider):
    def dumps(self, obj: Any, **kwargs: Any) -> str:
        if kwargs and kwargs != _COMPACT:
            return super().dumps(obj, **kwargs)
        try:
            return orjson.dumps(obj, default=self.default, option=_OPTIONS).decode()
        except orjson.JSONEncodeError:
            return super().dumps(obj, **kwargs)
