"""Background campaigns, kept in the conditions store with generic conditions features only.

A **campaign** is a named set of background conditions (beam currents, injection,
luminosity, the simulation release and the dataset the generator was trained on). Its
checkpoints and their IoVs live in the campaign's own global tag, so choosing a campaign
means choosing a global tag, and its IoVs make generation run-dependent.

Storage design (conditions knows nothing of PXD; this uses tags, payloads and IoVs only):

* The campaign ``NAME`` owns the global tag ``PXDBackgroundGenerator_NAME``. The mapping is
  a fixed naming rule, not a lookup table, so resolving a campaign works through every
  kind of metadata source (SQL store, REST server, basf2 snapshot) without listing tags.
* The campaign record is a JSON payload named ``PXDBackgroundCampaign`` in that tag, with
  the IoV "always" ``(0, 0, -1, -1)``. Editing the record while the tag is OPEN uploads a
  new revision (highest revision wins); once the tag is frozen, so is the record.
* The tag description carries a one-line human summary, so ``conditionsdb tag list``
  already says what each campaign is without any PXD knowledge.
* Checkpoints are payloads ``PXDBackgroundGenerator_<model>`` with IoVs in the same tag.

The JSON record (``schema: 1``) has the fields of :class:`Campaign`; unknown keys written by a
newer version are preserved in ``extra`` and never dropped on rewrite.
"""

from __future__ import annotations

import io
import json
import re
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from conditions.exceptions import (
    ChecksumMismatchError,
    FrozenTagError,
    NoPayloadFoundError,
    TagExistsError,
    UnknownTagError,
)
from conditions.iov import IntervalOfValidity
from conditions.payload import PayloadInfo, hash_file
from conditions.source import MetadataSource
from conditions.store.base import GlobalTagInfo, Store
from conditions.tags import GlobalTagState

from .exceptions import CampaignExistsError, InvalidCampaignError, UnknownCampaignError

#: The default global tag: what generation uses when no campaign is given.
DEFAULT_GLOBALTAG = "PXDBackgroundGenerator"
#: Payload name of the campaign record inside a campaign's tag.
CAMPAIGN_PAYLOAD = "PXDBackgroundCampaign"
#: Campaign tags are named with this prefix followed by the campaign name.
CAMPAIGN_TAG_PREFIX = DEFAULT_GLOBALTAG + "_"
#: Version of the JSON record layout.
CAMPAIGN_SCHEMA = 1

# Campaign names become part of a tag name: keep them to an alphabet that is valid in tag
# names, payload names and file names alike.
_CAMPAIGN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-+]{0,99}$")


def validate_campaign_name(name: object) -> str:
    if not isinstance(name, str) or not _CAMPAIGN_NAME.match(name):
        raise InvalidCampaignError(
            f"invalid campaign name {name!r}: use 1 to 100 letters, digits and _-+, "
            "starting with a letter or digit"
        )
    return name


def campaign_tag(name: str) -> str:
    """The global tag that holds campaign ``name``: ``PXDBackgroundGenerator_<name>``."""
    return CAMPAIGN_TAG_PREFIX + validate_campaign_name(name)


def campaign_from_tag(tag: str) -> str | None:
    """The campaign a tag belongs to, or None when the tag is not a campaign tag."""
    if tag.startswith(CAMPAIGN_TAG_PREFIX):
        name = tag[len(CAMPAIGN_TAG_PREFIX):]
        if _CAMPAIGN_NAME.match(name):
            return name
    return None


@dataclass(frozen=True)
class Campaign:
    """One background campaign.

    ``beam_conditions`` is free-form (e.g. ``{"her_current_mA": 1040, "ler_current_mA":
    1300, "injection": "continuous", "background_sources": ["Touschek", "Coulomb",
    "RBB", "twoPhoton"]}``); ``luminosity`` is the instantaneous luminosity in
    cm^-2 s^-1; ``simulation_release`` is the basf2 release that simulated the training
    sample; ``training_dataset`` points at it (LFN, path or DOI).
    """

    name: str
    description: str = ""
    beam_conditions: dict[str, Any] = field(default_factory=dict)
    luminosity: float | None = None
    simulation_release: str | None = None
    training_dataset: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_campaign_name(self.name)
        if not isinstance(self.description, str):
            raise InvalidCampaignError("campaign description must be a string")
        if not isinstance(self.beam_conditions, dict):
            raise InvalidCampaignError("beam_conditions must be a mapping")
        if self.luminosity is not None:
            if isinstance(self.luminosity, bool) or not isinstance(self.luminosity, (int, float)):
                raise InvalidCampaignError(f"luminosity must be a number, got {self.luminosity!r}")
            if self.luminosity < 0:
                raise InvalidCampaignError(f"luminosity must be >= 0, got {self.luminosity}")
        for attribute in ("simulation_release", "training_dataset"):
            value = getattr(self, attribute)
            if value is not None and not isinstance(value, str):
                raise InvalidCampaignError(f"{attribute} must be a string, got {value!r}")

    @property
    def globaltag(self) -> str:
        return campaign_tag(self.name)

    @property
    def summary(self) -> str:
        """The one line written into the tag description."""
        text = f"PXD background campaign {self.name}"
        return f"{text}: {self.description}" if self.description else text

    # -- JSON record ----------------------------------------------------------------------
    def to_json(self) -> bytes:
        record = {"schema": CAMPAIGN_SCHEMA, **self.extra}
        record.update({k: v for k, v in asdict(self).items() if k != "extra"})
        try:
            return json.dumps(record, sort_keys=True, indent=1, allow_nan=False).encode()
        except (TypeError, ValueError) as error:
            raise InvalidCampaignError(f"campaign {self.name!r} is not JSON-serialisable: {error}") from None

    @classmethod
    def from_json(cls, data: bytes | str) -> "Campaign":
        try:
            record = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise InvalidCampaignError(f"campaign record is not valid JSON: {error}") from None
        if not isinstance(record, dict):
            raise InvalidCampaignError("campaign record must be a JSON object")
        schema = record.pop("schema", None)
        if schema != CAMPAIGN_SCHEMA:
            raise InvalidCampaignError(
                f"campaign record has schema {schema!r}; this version reads schema {CAMPAIGN_SCHEMA}"
            )
        known = {f.name for f in fields(cls)} - {"extra"}
        extra = {k: record.pop(k) for k in list(record) if k not in known}
        if "name" not in record:
            raise InvalidCampaignError("campaign record has no name")
        return cls(**record, extra=extra)


@dataclass(frozen=True)
class CampaignStatus:
    """A campaign as found in a store: the record plus the state of its tag."""

    campaign: Campaign
    tag: GlobalTagInfo
    payload: PayloadInfo


# -- writing -------------------------------------------------------------------------------

def create_campaign(store: Store, campaign: Campaign, *, user: str | None = None) -> CampaignStatus:
    """Create the campaign's tag (OPEN) and store its record in it.

    CampaignExistsError when the tag exists already. If storing the record fails, the new
    tag is left OPEN and empty, and a retry with :func:`update_campaign` completes it.
    """
    try:
        store.create_tag(campaign.globaltag, campaign.summary, user=user)
    except TagExistsError:
        raise CampaignExistsError(
            f"campaign {campaign.name!r} exists already (global tag {campaign.globaltag!r})"
        ) from None
    return _write_record(store, campaign, user=user)


def update_campaign(store: Store, campaign: Campaign, *, user: str | None = None) -> CampaignStatus:
    """Replace the record of an existing campaign (its tag must still be OPEN)."""
    try:
        info = store.get_tag(campaign.globaltag)
    except UnknownTagError:
        raise UnknownCampaignError(f"no campaign {campaign.name!r} (no global tag {campaign.globaltag!r})") from None
    if info.state is not GlobalTagState.OPEN:
        raise FrozenTagError(
            f"campaign {campaign.name!r} is frozen: its global tag {info.name!r} is {info.state.value}"
        )
    store.modify_tag(campaign.globaltag, description=campaign.summary, user=user)
    return _write_record(store, campaign, user=user)


def _write_record(store: Store, campaign: Campaign, *, user: str | None) -> CampaignStatus:
    payload = store.add_payload(
        CAMPAIGN_PAYLOAD,
        io.BytesIO(campaign.to_json()),
        metadata={"campaign": campaign.name, "schema": CAMPAIGN_SCHEMA, "content_type": "application/json"},
        user=user,
    )
    current = store.iovs(campaign.globaltag, name=CAMPAIGN_PAYLOAD)
    if not any(r.payload.revision == payload.revision and r.iov == IntervalOfValidity.always() for r in current):
        store.add_iov(campaign.globaltag, CAMPAIGN_PAYLOAD, payload.revision, IntervalOfValidity.always(), user=user)
    return CampaignStatus(campaign, store.get_tag(campaign.globaltag), payload)


# -- reading -------------------------------------------------------------------------------

def read_payload_bytes(source: MetadataSource, payload: PayloadInfo, *, max_size: int = 1 << 20) -> bytes:
    """The bytes of a small payload, verified against its checksum before use."""
    if payload.size is not None and payload.size > max_size:
        raise InvalidCampaignError(f"payload {payload.name} r{payload.revision} is {payload.size} bytes; too large")
    with tempfile.TemporaryDirectory(prefix="pxdbg-campaign-") as tmp:
        target = Path(tmp) / "payload"
        local = source.local_path(payload)
        if local is not None and Path(local).is_file():
            target.write_bytes(Path(local).read_bytes())
        else:
            source.fetch_payload(payload, target)
        hashes = hash_file(target)
        if hashes.md5 != payload.checksum or (payload.sha256 and hashes.sha256 != payload.sha256):
            raise ChecksumMismatchError(
                f"payload {payload.name} r{payload.revision} from {source.description} does not match its checksum"
            )
        return target.read_bytes()


def get_campaign(source: MetadataSource, name: str) -> Campaign:
    """The campaign record ``name`` from any metadata source (OPEN tags included)."""
    tag = campaign_tag(name)
    try:
        resolved = source.resolve(tag, CAMPAIGN_PAYLOAD, 0, 0, allow_open=True)
    except UnknownTagError:
        raise UnknownCampaignError(f"no campaign {name!r} in {source.description} (no global tag {tag!r})") from None
    except NoPayloadFoundError:
        raise UnknownCampaignError(
            f"global tag {tag!r} in {source.description} holds no {CAMPAIGN_PAYLOAD} record"
        ) from None
    campaign = Campaign.from_json(read_payload_bytes(source, resolved.payload))
    if campaign.name != name:
        raise InvalidCampaignError(f"global tag {tag!r} holds the record of campaign {campaign.name!r}, not {name!r}")
    return campaign


def campaign_status(store: Store, name: str) -> CampaignStatus:
    """The campaign, its tag (state, description) and the record payload."""
    tag = campaign_tag(name)
    try:
        info = store.get_tag(tag)
    except UnknownTagError:
        raise UnknownCampaignError(f"no campaign {name!r} (no global tag {tag!r})") from None
    try:
        resolved = store.resolve(tag, CAMPAIGN_PAYLOAD, 0, 0, allow_open=True)
    except NoPayloadFoundError:
        raise UnknownCampaignError(f"global tag {tag!r} holds no {CAMPAIGN_PAYLOAD} record") from None
    campaign = Campaign.from_json(read_payload_bytes(store, resolved.payload))
    return CampaignStatus(campaign, info, resolved.payload)


def list_campaigns(store: Store) -> list[CampaignStatus]:
    """Every campaign in the store, by name. Tags with the campaign prefix but no record
    (e.g. a half-created campaign) are skipped."""
    found = []
    for info in store.list_tags(pattern=CAMPAIGN_TAG_PREFIX + "*"):
        name = campaign_from_tag(info.name)
        if name is None:
            continue
        try:
            found.append(campaign_status(store, name))
        except UnknownCampaignError:
            continue
    return sorted(found, key=lambda status: status.campaign.name)
