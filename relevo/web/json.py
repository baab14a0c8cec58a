"""A JSON response encoded with msgspec (fast, and it knows datetimes)."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.responses import JSONResponse as _StarletteJSONResponse

_encoder = msgspec.json.Encoder()


class JSONResponse(_StarletteJSONResponse):
    def render(self, content: Any) -> bytes:
        return _encoder.encode(content)
