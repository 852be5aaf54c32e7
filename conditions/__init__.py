"""A general conditions database for Belle II style payloads: global tags with a
lifecycle, immutable payload revisions, intervals of validity, SQL stores (SQLite and
PostgreSQL), and the tools around them. Knows nothing of any particular payload type."""

from __future__ import annotations

from .exceptions import (
    AllServersFailedError,
    AuthenticationError,
    CacheLockTimeout,
    ChecksumMismatchError,
    ConcurrentModificationError,
    ConditionsError,
    FrozenTagError,
    InvalidIoVError,
    InvalidNameError,
    InvalidValueError,
    NoPayloadFoundError,
    NotAStoreError,
    OfflineError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ReadOnlyStoreError,
    ServerError,
    TagExistsError,
    TagStateError,
    UnknownIoVError,
    UnknownPayloadError,
    UnknownTagError,
    UnknownTokenError,
    UnusableTagError,
)
from .iov import IntervalOfValidity, IoV
from .payload import FileHashes, IoVRecord, PayloadInfo, ResolvedPayload, hash_file
from .source import MetadataSource
from .store import GlobalTagInfo, SqlStore, Store, TagDiff, open_store
from .tags import GlobalTagState

__all__ = [
    "AllServersFailedError",
    "AuthenticationError",
    "CacheLockTimeout",
    "ChecksumMismatchError",
    "ConcurrentModificationError",
    "ConditionsError",
    "FileHashes",
    "FrozenTagError",
    "GlobalTagInfo",
    "GlobalTagState",
    "IntervalOfValidity",
    "InvalidIoVError",
    "InvalidNameError",
    "InvalidValueError",
    "IoV",
    "IoVRecord",
    "MetadataSource",
    "NoPayloadFoundError",
    "NotAStoreError",
    "OfflineError",
    "PayloadInfo",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "ReadOnlyStoreError",
    "ResolvedPayload",
    "ServerError",
    "SqlStore",
    "Store",
    "TagDiff",
    "TagExistsError",
    "TagStateError",
    "UnknownIoVError",
    "UnknownPayloadError",
    "UnknownTagError",
    "UnknownTokenError",
    "UnusableTagError",
    "hash_file",
    "open_store",
]
