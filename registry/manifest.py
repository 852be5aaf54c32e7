"""The manifest: what a checkpoint is, recorded inside the checkpoint file itself.

A manifest travels in the safetensors header metadata, one key per field with a JSON
encoded value, so ``safetensors`` tools show it field by field and nothing outside the
file is needed to know which model, architecture version and campaign it belongs to.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

from .exceptions import ManifestError, ManifestMismatchError

#: Metadata key marking a file as a pxdbg checkpoint, and the layout version of the keys.
FORMAT_KEY = "pxdbg.format"
FORMAT_VALUE = "pxdbg-checkpoint"
FORMAT_VERSION_KEY = "pxdbg.format_version"
FORMAT_VERSION = 1
_FIELD_PREFIX = "manifest."


def _utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def software_versions() -> dict[str, str]:
    """Versions of the software that matters for reproducing a checkpoint."""
    versions = {"python": platform.python_version()}
    try:  # torch is optional here: the registry may run without it
        import torch

        versions["torch"] = torch.__version__
    except ImportError:  # pragma: no cover - torch is installed wherever checkpoints are made
        pass
    try:
        from importlib.metadata import version

        versions["pxdbg"] = version("pxdbg")
    except Exception:  # not installed as a distribution (e.g. run from a checkout)
        pass
    return versions


@dataclass(frozen=True)
class Manifest:
    """Provenance and identity of one checkpoint.

    ``model`` and ``architecture_version`` decide whether a generator may load the weights;
    ``model_config`` holds the constructor arguments (e.g. a reduced ``width``) needed to
    build a model whose parameter shapes match. The rest is provenance.
    """

    model: str
    architecture_version: int
    campaign: str | None = None
    training_dataset: str | None = None
    training_steps: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    software: dict[str, str] = field(default_factory=dict)
    model_config: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=_utc_now)
    description: str | None = None
    #: A demo or test checkpoint, not a physics model (the embedded defaults, placeholders).
    demo: bool = False
    #: The training files, each ``{"name", "events", "sha256"}`` (models fitted to several).
    training_files: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ManifestError(f"manifest field 'model' must be a non-empty string, got {self.model!r}")
        if isinstance(self.architecture_version, bool) or not isinstance(self.architecture_version, int):
            raise ManifestError(
                f"manifest field 'architecture_version' must be an int, got {self.architecture_version!r}"
            )
        if self.training_steps is not None and (
            isinstance(self.training_steps, bool) or not isinstance(self.training_steps, int)
        ):
            raise ManifestError(f"manifest field 'training_steps' must be an int, got {self.training_steps!r}")
        for name in ("metrics", "software", "model_config"):
            if not isinstance(getattr(self, name), Mapping):
                raise ManifestError(f"manifest field {name!r} must be a mapping")
        if not isinstance(self.training_files, list) or not all(isinstance(f, Mapping) for f in self.training_files):
            raise ManifestError("manifest field 'training_files' must be a list of mappings")
        if not isinstance(self.demo, bool):
            raise ManifestError(f"manifest field 'demo' must be true or false, got {self.demo!r}")

    @property
    def untrained(self) -> bool:
        """Freshly initialised weights (``training_steps`` 0), e.g. a placeholder."""
        return self.training_steps == 0

    @property
    def manifest_id(self) -> str:
        """A stable identity of this manifest: SHA-256 of its fields as canonical JSON."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Manifest":
        known = {f.name for f in dataclasses.fields(cls)}
        # Fields written by a newer version are kept out rather than refused: a reader
        # only needs the ones it knows, and old readers must keep working.
        kwargs = {k: v for k, v in data.items() if k in known}
        missing = {"model", "architecture_version"} - kwargs.keys()
        if missing:
            raise ManifestError(f"manifest lacks required field(s): {', '.join(sorted(missing))}")
        return cls(**kwargs)

    def to_metadata(self) -> dict[str, str]:
        """The safetensors header metadata: string keys, JSON-encoded string values."""
        meta = {FORMAT_KEY: FORMAT_VALUE, FORMAT_VERSION_KEY: str(FORMAT_VERSION)}
        for key, value in self.to_dict().items():
            meta[_FIELD_PREFIX + key] = json.dumps(value, sort_keys=True)
        return meta

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str] | None) -> "Manifest | None":
        """The manifest in a safetensors header, or None when the file carries none."""
        if not metadata or metadata.get(FORMAT_KEY) != FORMAT_VALUE:
            return None
        version = metadata.get(FORMAT_VERSION_KEY)
        if version != str(FORMAT_VERSION):
            raise ManifestError(f"unsupported checkpoint manifest version {version!r}")
        data = {}
        for key, raw in metadata.items():
            if key.startswith(_FIELD_PREFIX):
                try:
                    data[key[len(_FIELD_PREFIX):]] = json.loads(raw)
                except json.JSONDecodeError as exc:
                    raise ManifestError(f"manifest field {key!r} is not valid JSON: {exc}") from exc
        return cls.from_dict(data)


def check_manifest(manifest: Manifest, model_name: str, architecture_version: int) -> None:
    """Refuse a checkpoint made for another model or architecture version.

    Called before any event is generated, so a wrong checkpoint fails loudly at start-up
    instead of producing garbage (or failing deep inside ``load_state_dict``).
    """
    if manifest.model != model_name:
        raise ManifestMismatchError(
            f"checkpoint is for model {manifest.model!r}, but the generator uses model {model_name!r}"
        )
    if manifest.architecture_version != architecture_version:
        raise ManifestMismatchError(
            f"checkpoint for model {model_name!r} has architecture version "
            f"{manifest.architecture_version}, but this pxdbg implements version {architecture_version}"
        )
