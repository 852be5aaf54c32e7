"""Fast JSON answers (orjson when installed) with explicit cache headers."""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import Response

try:
    import orjson

    def dumps(data: Any) -> bytes:
        return orjson.dumps(data)
except ImportError:  # pragma: no cover - orjson is optional
    def dumps(data: Any) -> bytes:
        return json.dumps(data, separators=(",", ":")).encode()


def json_response(data: Any, *, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return raw_json_response(dumps(data), status_code=status_code, headers=headers)


def raw_json_response(body: bytes, *, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(content=body, status_code=status_code, headers=headers, media_type="application/json")
