"""Beam conditions of a run, as a conditions payload.

PXD background scales with the machine: luminosity drives the QED pairs, the beam currents
(through Touschek scattering and beam-gas interactions) drive the beam losses, and the
injection rate drives the injection bursts. A conditioned generator (``pxdbg`` model
``sparse-beam``) reads the conditions of each run from the payload ``BeamConditions``,
resolved per run like any payload (global tags, IoVs, the same source rules as checkpoints).

The payload is a small JSON document, validated here with pydantic::

    {"version": 1, "luminosity": 1.5, "her_current": 1000.0, "ler_current": 1200.0,
     "injection_fraction": 0.03, "extra": {"ler_pressure_npa": 12.0}, "description": "..."}

* ``luminosity``: instantaneous luminosity in 1e34 cm^-2 s^-1 (0 to 1e4);
* ``her_current``, ``ler_current``: HER (e-) and LER (e+) beam currents in mA (0 to 1e5);
* ``injection_fraction``: fraction of the PXD frames taken while an injected bunch is still
  noisy (0..1);
* ``extra``: room for more: further named quantities (non-negative numbers, e.g. pressures,
  bunch numbers, beam sizes), kept and recorded with the events; models of architecture
  version 1 do not use them;
* ``description``: free text (optional).

Unknown top-level keys, a missing field, a negative or non-finite number, a string where a
number belongs, a duplicated key and JSON that does not parse are all refused with
:class:`~registry.exceptions.BeamConditionsError` naming the field: a typo in a conditions
payload must never quietly become a default. A ``version`` newer than this code knows is
refused too, with a message that says so.

Upload with ``pxdbg beam upload`` (validates first), or with the generic
``conditionsdb upload TAG FILE.json --name BeamConditions --iov ...`` (validated when a job
resolves it).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .exceptions import BeamConditionsError

#: Payload name of the beam conditions of a run.
BEAM_PAYLOAD = "BeamConditions"
#: Layout version of the JSON document this code reads and writes.
BEAM_SCHEMA_VERSION = 1
#: ``kind`` in the payload metadata.
METADATA_KIND = "beam-conditions"
#: Largest payload read (a conditions record is a few hundred bytes).
MAX_BYTES = 64 * 1024
#: The fields that describe the machine (in this order in tables and arrays).
FIELDS = ("luminosity", "her_current", "ler_current", "injection_fraction")
UNITS = {"luminosity": "1e34 cm^-2 s^-1", "her_current": "mA", "ler_current": "mA", "injection_fraction": ""}

_EXTRA_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_NonNegative = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
# Far above any collider (SuperKEKB's design: 80e34, 2.6 A and 3.6 A): a value beyond these
# is a typo or a unit mistake (A for mA), refused rather than generated.
MAX_LUMINOSITY = 1e4
MAX_CURRENT = 1e5


class BeamConditions(BaseModel):
    """The beam conditions of a run (see the module docstring for units and rules)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    version: int = BEAM_SCHEMA_VERSION
    luminosity: Annotated[_NonNegative, Field(le=MAX_LUMINOSITY)]
    her_current: Annotated[_NonNegative, Field(le=MAX_CURRENT)]
    ler_current: Annotated[_NonNegative, Field(le=MAX_CURRENT)]
    injection_fraction: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
    extra: dict[str, _NonNegative] = Field(default_factory=dict, max_length=64)
    description: str | None = Field(default=None, max_length=1000)

    @field_validator("version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value != BEAM_SCHEMA_VERSION:
            raise ValueError(f"version {value} is not understood by this pxdbg (it reads version "
                             f"{BEAM_SCHEMA_VERSION}); upgrade pxdbg or write a version-{BEAM_SCHEMA_VERSION} record")
        return value

    @field_validator("extra")
    @classmethod
    def _extra_names(cls, value: dict[str, float]) -> dict[str, float]:
        bad = [name for name in value if not _EXTRA_NAME.match(name)]
        if bad:
            raise ValueError(f"extra quantity names must be lower-case letters, digits and _ (1-64 characters, "
                             f"starting with a letter): {', '.join(repr(b) for b in bad)}")
        return value

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def from_mapping(cls, data: Any, where: str = "beam conditions") -> "BeamConditions":
        """Validated conditions from a parsed JSON object; BeamConditionsError otherwise."""
        if not isinstance(data, Mapping):
            raise BeamConditionsError(f"{where}: expected a JSON object, got {type(data).__name__}")
        try:
            return cls.model_validate(dict(data))
        except ValidationError as error:
            raise BeamConditionsError(f"{where}: " + _explain(error)) from None

    @classmethod
    def from_json(cls, text: str | bytes, where: str = "beam conditions") -> "BeamConditions":
        """Validated conditions from JSON text; BeamConditionsError on anything else."""
        if isinstance(text, bytes):
            if len(text) > MAX_BYTES:
                raise BeamConditionsError(f"{where}: {len(text)} bytes; a beam conditions record is at most "
                                          f"{MAX_BYTES} bytes")
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as error:
                raise BeamConditionsError(f"{where}: not UTF-8 text ({error})") from None
        if len(text) > MAX_BYTES:
            raise BeamConditionsError(f"{where}: a beam conditions record is at most {MAX_BYTES} bytes")
        try:
            data = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
        except json.JSONDecodeError as error:
            raise BeamConditionsError(f"{where}: not valid JSON: {error.msg} at line {error.lineno} column "
                                      f"{error.colno}") from None
        except ValueError as error:  # from the hooks
            raise BeamConditionsError(f"{where}: {error}") from None
        return cls.from_mapping(data, where)

    @classmethod
    def from_file(cls, path: str | Path, where: str | None = None) -> "BeamConditions":
        """Validated conditions from a JSON file (``where`` names it in errors; default its path)."""
        where = where or str(path)
        try:
            with open(path, "rb") as stream:
                raw = stream.read(MAX_BYTES + 1)
        except OSError as error:
            raise BeamConditionsError(f"{where}: cannot read ({error.strerror or error})") from None
        return cls.from_json(raw, where=where)

    # -- output ---------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = self.model_dump()
        if data["description"] is None:
            del data["description"]
        return data

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, compact): equal conditions give equal bytes, so the
        same conditions uploaded twice are one payload."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def values(self) -> tuple[float, ...]:
        """The machine quantities in :data:`FIELDS` order."""
        return tuple(float(getattr(self, name)) for name in FIELDS)

    def summary(self) -> str:
        """One line for logs: ``L 1.5e34, HER 1000 mA, LER 1200 mA, injection 3.0%``."""
        text = (f"L {self.luminosity:g}e34, HER {self.her_current:g} mA, LER {self.ler_current:g} mA, "
                f"injection {self.injection_fraction:.1%}")
        if self.extra:
            text += ", " + ", ".join(f"{k} {v:g}" for k, v in sorted(self.extra.items()))
        return text


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"key {key!r} appears twice")
        seen[key] = value
    return seen


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a number a beam conditions record may hold")


def _explain(error: ValidationError) -> str:
    """pydantic's errors as one line per field, with the offending value."""
    parts = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "(record)"
        if item["type"] == "missing":
            parts.append(f"field {field!r} is missing")
        elif item["type"] == "extra_forbidden":
            parts.append(f"unknown field {field!r} (fields: {', '.join(FIELDS + ('extra', 'description', 'version'))})")
        else:
            message = item["msg"]
            if message.startswith("Value error, "):
                message = message[len("Value error, "):]
            parts.append(f"field {field!r}: {message} (got {item.get('input')!r})")
    return "; ".join(parts)


def payload_metadata(conditions: BeamConditions) -> dict[str, Any]:
    """Searchable payload metadata: the kind and a copy of the record."""
    return {"kind": METADATA_KIND, "conditions": conditions.to_dict()}


def read_payload(path: str | Path, what: str) -> BeamConditions:
    """The validated conditions in payload file ``path`` (``what`` names it in errors)."""
    return BeamConditions.from_file(path, where=what)


@dataclass(frozen=True)
class ResolvedBeamConditions:
    """The conditions the registry resolved for a run, with where they came from
    (``payload``, ``iov``, ``tag``, answering ``source``; ``valid``: the runs over which
    this same answer holds, for the cache)."""

    conditions: BeamConditions
    payload: Any = None
    iov: Any = None
    valid: Any = None
    tag: str | None = None
    source: str | None = None

    @property
    def key(self) -> Any:
        """Identity of the answer: the payload when there is one, else the values."""
        return self.payload.key if self.payload is not None else self.conditions.to_json()

    def describe(self) -> str:
        if self.payload is None:
            return f"{self.conditions.summary()} (given for the job)"
        return (f"{self.conditions.summary()} ({self.payload.name} r{self.payload.revision}, tag {self.tag}, "
                f"IoV {self.iov}, from {self.source})")

    def record(self) -> dict[str, Any]:
        """What the provenance of generated events keeps of it."""
        out: dict[str, Any] = {"values": self.conditions.to_dict()}
        if self.payload is not None:
            out.update(payload=self.payload.name, revision=self.payload.revision, md5=self.payload.checksum,
                       sha256=self.payload.sha256, globaltag=self.tag,
                       iov=list(self.iov.as_tuple()) if self.iov is not None else None, source=self.source)
        else:
            out["source"] = "given"
        return out


def upload_beam_conditions(store: Any, conditions: BeamConditions, *, tag: str, iov: Any) -> Any:
    """Store ``conditions`` as payload ``BeamConditions`` valid for ``iov`` in ``tag`` (one
    transaction on a database; on a server the payload first); returns the IoV record."""
    data = (conditions.to_json() + "\n").encode("utf-8")
    metadata = payload_metadata(conditions)
    filename = f"{BEAM_PAYLOAD}.json"
    if hasattr(store, "upload"):
        return store.upload(tag, BEAM_PAYLOAD, data, iov, metadata=metadata, filename=filename)
    info = store.add_payload(BEAM_PAYLOAD, data, metadata=metadata, filename=filename)
    return store.add_iov(tag, BEAM_PAYLOAD, info.revision, iov)
