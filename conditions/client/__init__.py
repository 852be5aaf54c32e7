"""The conditions REST client: the Store interface over HTTP(S), with retries, failover,
offline mode and a verified payload cache. Transport details live in :mod:`.transport`."""

from .client import ConditionsClient, client_from_environment, raise_for_error

__all__ = ["ConditionsClient", "client_from_environment", "raise_for_error"]
