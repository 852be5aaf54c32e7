"""One router per resource of the API."""

from . import audit, basf2, basf2_client, browse, iovs, meta, payloads, resolve, tags, tokens

ALL = [meta.router, tags.router, payloads.router, iovs.router, resolve.router, audit.router,
       tokens.router, basf2.router, basf2_client.router, browse.router]
