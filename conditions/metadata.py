"""Free-form payload metadata: what a store accepts, and how rows that predate the
checks are shown.

Metadata is a JSON object. It is checked before anything is stored: nested at most
:data:`MAX_DEPTH` levels (objects and lists), at most :data:`MAX_BYTES` bytes as compact
JSON, no NaN or infinities. Deeper documents break JSON encoders (orjson stops at 255
levels, Python's json at the interpreter's recursion limit), and one such row would make
every listing that contains it fail for every client.

Rows stored before these checks (or written into the database by other tools) are never
a reason for a listing to fail: :func:`readable_metadata` turns anything that does not
pass into a small placeholder object that says why.
"""

from __future__ import annotations

import json
from typing import Any

from .exceptions import InvalidMetadataError

#: Deepest nesting of objects and lists accepted (the top-level object is level 1).
MAX_DEPTH = 32
#: Largest metadata accepted, as compact JSON.
MAX_BYTES = 64 * 1024
#: Key of the placeholder that replaces unreadable metadata in answers.
UNREADABLE_KEY = "unreadable_metadata"


def _depth_exceeds(value: Any, limit: int) -> bool:
    """True when ``value`` nests deeper than ``limit`` levels. Iterative, so a document
    nested 100,000 levels deep costs a loop, not a RecursionError."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def encode_metadata(metadata: Any) -> str:
    """``metadata`` as the JSON text a store keeps; InvalidMetadataError when it is not a
    JSON object, nests deeper than MAX_DEPTH, holds NaN/infinities or is over MAX_BYTES."""
    if not isinstance(metadata, dict):
        raise InvalidMetadataError(f"payload metadata must be a JSON object, got {type(metadata).__name__}")
    if _depth_exceeds(metadata, MAX_DEPTH):
        raise InvalidMetadataError(f"payload metadata nests deeper than {MAX_DEPTH} levels")
    try:
        text = json.dumps(metadata, sort_keys=True, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as error:
        raise InvalidMetadataError(f"payload metadata must be JSON-serialisable: {error}") from None
    if len(text.encode("utf-8")) > MAX_BYTES:
        raise InvalidMetadataError(
            f"payload metadata is {len(text.encode('utf-8'))} bytes as JSON, over the limit of {MAX_BYTES}"
        )
    return text


def decode_metadata(text: str | None) -> dict[str, Any]:
    """The metadata stored as ``text``, or a placeholder saying why it cannot be shown."""
    if not text:
        return {}
    if len(text) > 4 * MAX_BYTES:
        return {UNREADABLE_KEY: f"stored metadata is {len(text)} characters long, over the limit"}
    try:
        value = json.loads(text)
    except RecursionError:
        return {UNREADABLE_KEY: f"stored metadata nests deeper than {MAX_DEPTH} levels"}
    except ValueError as error:
        return {UNREADABLE_KEY: f"stored metadata is not valid JSON ({error})"}
    return readable_metadata(value)


def readable_metadata(value: Any) -> dict[str, Any]:
    """``value`` if it is metadata that any encoder can write, else a placeholder."""
    if not isinstance(value, dict):
        return {UNREADABLE_KEY: f"stored metadata is a JSON {type(value).__name__}, not an object"}
    if _depth_exceeds(value, MAX_DEPTH):
        return {UNREADABLE_KEY: f"stored metadata nests deeper than {MAX_DEPTH} levels"}
    return value
