"""Errors of the checkpoint registry, each with a short machine-readable ``code``.

They derive from :class:`RegistryError`, so a caller can catch the family; the ones that
describe bad input also derive from ``ValueError``.
"""

from __future__ import annotations


class RegistryError(Exception):
    """Base class of all registry errors."""

    code = "registry_error"


class CheckpointFormatError(RegistryError, ValueError):
    """A file that is neither a pxdbg safetensors checkpoint nor a torch state dict."""

    code = "checkpoint_format"


class UnsafeCheckpointError(RegistryError, ValueError):
    """A legacy torch file whose pickle would run code (or build objects other than plain
    tensors and containers) when loaded. It is refused, never executed."""

    code = "unsafe_checkpoint"


class ManifestError(RegistryError, ValueError):
    """A manifest that is missing required fields or holds values of the wrong type."""

    code = "invalid_manifest"


# -- campaigns and resolution (registry/campaigns.py, registry/resolve.py) ------------------

class InvalidCampaignError(RegistryError, ValueError):
    """A campaign name or record that is not valid (bad characters, wrong types, bad JSON)."""

    code = "invalid_campaign"


class UnknownCampaignError(RegistryError, LookupError):
    """No campaign of that name (its global tag, or the record in it, does not exist)."""

    code = "unknown_campaign"


class CampaignExistsError(RegistryError):
    """A campaign of that name exists already."""

    code = "campaign_exists"


class NoCheckpointSourceError(RegistryError, LookupError):
    """No configured conditions source could answer; ``attempts`` lists each source tried
    and why it failed."""

    code = "no_checkpoint_source"

    def __init__(self, message: str, attempts: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.attempts = list(attempts or [])


class CheckpointMismatchError(RegistryError, ValueError):
    """Weights that do not fit the model that is about to use them (other model, other
    architecture version, missing or unexpected parameters, other shapes)."""

    code = "checkpoint_mismatch"


class ManifestMismatchError(CheckpointMismatchError):
    """A checkpoint whose manifest names another model or architecture version than the
    one that is about to use it."""

    code = "manifest_mismatch"


class SourceFailedError(RegistryError):
    """A configured conditions source failed (unreachable, damaged payload bytes, I/O
    error, cache lock timeout) and failover between sources was not asked for: the job
    stops rather than use other weights than configured. ``attempts`` lists each source
    tried and why."""

    code = "source_failed"

    def __init__(self, message: str, attempts: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.attempts = list(attempts or [])


class DemoCheckpointError(RegistryError):
    """A demo or untrained checkpoint where production weights were required
    (``--require-production`` / ``PXDBG_REQUIRE_PRODUCTION=1``)."""

    code = "demo_checkpoint"


class BeamConditionsError(RegistryError, ValueError):
    """A beam conditions record (payload ``BeamConditions``, a label of a training file)
    that is not valid: bad JSON, a missing or unknown field, a negative value."""

    code = "invalid_beam_conditions"
