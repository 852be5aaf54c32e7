"""Bearer-token authentication and scopes.

Reads are anonymous. Every write needs ``Authorization: Bearer <secret>``; the store
keeps only a hash of the secret (``Store.authenticate``). Scopes:

* ``admin``: everything (tags, states, clones, tokens, any IoV);
* ``iov:<tag glob>``: upload payloads, and add, modify or delete IoVs in tags whose
  name matches the glob (fnmatch, case-sensitive), e.g. ``iov:PXDBackground*``.
"""

from __future__ import annotations

import fnmatch

from ..exceptions import InvalidNameError, PermissionDeniedError
from ..store.base import TokenInfo

ADMIN = "admin"
IOV_PREFIX = "iov:"


def validate_scope(scope: str) -> str:
    """Return ``scope`` if it is ``admin`` or ``iov:<glob>``; InvalidNameError otherwise."""
    if scope == ADMIN:
        return scope
    if scope.startswith(IOV_PREFIX) and len(scope) > len(IOV_PREFIX) and scope.isprintable():
        return scope
    raise InvalidNameError(f"invalid token scope {scope!r}: use 'admin' or 'iov:<tag glob>'")


def is_admin(token: TokenInfo) -> bool:
    return ADMIN in token.scopes


def require_admin(token: TokenInfo, action: str) -> None:
    if not is_admin(token):
        raise PermissionDeniedError(f"token {token.name!r} may not {action}: that needs the 'admin' scope")


def may_write_tag(token: TokenInfo, tag: str) -> bool:
    if is_admin(token):
        return True
    return any(
        s.startswith(IOV_PREFIX) and fnmatch.fnmatchcase(tag, s[len(IOV_PREFIX):]) for s in token.scopes
    )


def require_tag_scope(token: TokenInfo, tag: str, action: str) -> None:
    if not may_write_tag(token, tag):
        raise PermissionDeniedError(
            f"token {token.name!r} may not {action} in global tag {tag!r}: "
            f"its scopes {', '.join(token.scopes) or '(none)'} do not match the tag"
        )


def require_upload_scope(token: TokenInfo) -> None:
    # Payloads are immutable and harmless until an IoV points at them, so any token that
    # may create IoVs somewhere may upload.
    if not is_admin(token) and not any(s.startswith(IOV_PREFIX) for s in token.scopes):
        raise PermissionDeniedError(f"token {token.name!r} may not upload payloads: it has no iov: or admin scope")
