"""One router per resource of the API."""

from . import audit, basf2, browse, iovs, meta, payloads, resolve, tags, tokens

ALL = [meta.router, tags.router, payloads.router, iovs.router, resolve.router, audit.router,
       tokens.router, basf2.router, browse.router]
