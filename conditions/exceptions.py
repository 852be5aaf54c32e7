"""Every error the conditions package raises, in one place.

All derive from :class:`ConditionsError`, so a caller can catch the family, and each
carries a short machine-readable ``code`` that the REST server puts in its JSON error
bodies and the CLI maps to exit codes.
"""

from __future__ import annotations


class ConditionsError(Exception):
    """Base class of all conditions errors."""

    code = "conditions_error"


class InvalidNameError(ConditionsError, ValueError):
    """A global tag or payload name that is not allowed (bad characters, path tricks)."""

    code = "invalid_name"


class InvalidIoVError(ConditionsError, ValueError):
    """An interval of validity that is malformed (first after final, negatives, ...)."""

    code = "invalid_iov"


class UnknownTagError(ConditionsError, LookupError):
    """No global tag of that name exists."""

    code = "unknown_tag"


class UnknownPayloadError(ConditionsError, LookupError):
    """No payload of that name (and revision) exists."""

    code = "unknown_payload"


class UnknownIoVError(ConditionsError, LookupError):
    """No IoV with that id exists."""

    code = "unknown_iov"


class UnknownTokenError(ConditionsError, LookupError):
    """No API token with that id exists."""

    code = "unknown_token"


class InvalidValueError(ConditionsError, ValueError):
    """A malformed argument that is neither a name nor an IoV: payload metadata that is not
    JSON, an unknown token scope, a negative run number in a query, ..."""

    code = "invalid_value"


class TagExistsError(ConditionsError):
    """A global tag of that name already exists."""

    code = "tag_exists"


class TagStateError(ConditionsError):
    """A state transition outside the allowed table."""

    code = "invalid_transition"


class FrozenTagError(ConditionsError):
    """An IoV change in a tag whose state forbids it."""

    code = "frozen_tag"


class UnusableTagError(ConditionsError):
    """A tag whose state may not be used for processing (INVALID, or OPEN without opt-in)."""

    code = "unusable_tag"


class NoPayloadFoundError(ConditionsError, LookupError):
    """No IoV for the payload name covers the requested (exp, run) in any of the tags."""

    code = "no_payload"


class ConcurrentModificationError(ConditionsError):
    """Another writer changed the same tag at the same time; retry the operation."""

    code = "concurrent_modification"


class ChecksumMismatchError(ConditionsError):
    """Payload bytes whose hash does not match the metadata. They are never used."""

    code = "checksum_mismatch"


class NotAStoreError(ConditionsError):
    """A URL or file that is not a conditions store (or not one we can open)."""

    code = "not_a_store"


class ReadOnlyStoreError(ConditionsError):
    """A write to a read-only source such as a basf2 snapshot."""

    code = "read_only"


class PayloadTooLargeError(ConditionsError):
    """A payload over the configured size cap."""

    code = "payload_too_large"


class InvalidMetadataError(InvalidValueError):
    """Payload metadata that is not a JSON object, nests too deep, or is too large. Refused
    before anything is stored (HTTP 422)."""

    code = "invalid_metadata"


class RequestTooLargeError(ConditionsError):
    """A request body (other than a payload upload) over the server's cap (HTTP 413)."""

    code = "request_too_large"


class TooManyFailedLoginsError(ConditionsError):
    """Too many failed authentications from one client in a short time (HTTP 429, with
    ``retry_after`` seconds)."""

    code = "too_many_failures"

    def __init__(self, message: str, *, retry_after: float = 60.0):
        super().__init__(message)
        self.retry_after = retry_after


class DatabaseUnavailableError(ConditionsError):
    """The server's database cannot be reached right now (HTTP 503); retry later."""

    code = "database_unavailable"


class InsufficientStorageError(ConditionsError):
    """The server's disk (or database) is full (HTTP 507): nothing was stored."""

    code = "insufficient_storage"


class DamagedPayloadError(ConditionsError):
    """Stored payload bytes that no longer match their checksums, found on the side that
    holds them (a server's payload directory). They are never served (HTTP 500)."""

    code = "payload_damaged"


class CacheLockTimeout(ConditionsError, TimeoutError):
    """Waited too long for another process filling the same cache entry."""

    code = "cache_lock_timeout"


class OfflineError(ConditionsError):
    """The payload is not cached and offline mode forbids the network."""

    code = "offline"


class AuthenticationError(ConditionsError):
    """Missing or unknown token (HTTP 401)."""

    code = "unauthenticated"


class PermissionDeniedError(ConditionsError):
    """A valid token without the scope the operation needs (HTTP 403)."""

    code = "forbidden"


class ServerError(ConditionsError):
    """A server answered with an error; ``status`` and ``reason`` say which."""

    code = "server_error"

    def __init__(self, message: str, *, status: int | None = None, reason: str | None = None):
        super().__init__(message)
        self.status = status
        self.reason = reason


class AllServersFailedError(ConditionsError):
    """Every server in the list failed; ``attempts`` names each one tried and why."""

    code = "all_servers_failed"

    def __init__(self, message: str, attempts: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.attempts = list(attempts or [])
