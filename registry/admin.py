"""Admin operations on checkpoints: upload into a campaign's tag, import legacy torch files,
convert the stored precision, and build the embedded default store.

These work on any :class:`conditions.store.base.Store` (an SQL store, or a REST client with
write access). They never import :mod:`pxdbg`: whatever needs the model code (its
architecture version, a load test of the weights) is passed in by the caller, which is how
the ``pxdbg checkpoint`` commands use them.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from conditions.exceptions import FrozenTagError, InvalidValueError
from conditions.iov import IntervalOfValidity
from conditions.payload import IoVRecord, PayloadInfo
from conditions.payload_inspect import pack_report, report_metadata, report_name, validates
from conditions.store.base import Store
from conditions.tags import GlobalTagState

from .campaigns import DEFAULT_GLOBALTAG, campaign_status, campaign_tag
from .checkpoint import (METADATA_KIND, SAFETENSORS, read_checkpoint, read_manifest, sniff_format,
                         write_basf2_checkpoint, write_checkpoint)
from .exceptions import CheckpointFormatError, ManifestError, ManifestMismatchError
from .manifest import Manifest, check_manifest, software_versions
from .resolve import payload_name

log = logging.getLogger(__name__)

#: Tag states that accept new IoVs (RUNNING only after its last covered run).
_WRITABLE_STATES = (GlobalTagState.OPEN, GlobalTagState.RUNNING)
#: The lifecycle walked by :func:`publish_tag`.
PUBLISH_PATH = (GlobalTagState.TESTING, GlobalTagState.VALIDATED, GlobalTagState.PUBLISHED)


@dataclass(frozen=True)
class UploadResult:
    """What :func:`upload_checkpoint` stored: the payload, its IoV, and the manifest."""

    payload: PayloadInfo
    iov: IoVRecord
    tag: str
    manifest: Manifest
    manifest_added: bool


def target_tag(campaign: str | None = None, globaltag: str | None = None) -> str:
    """The tag a checkpoint goes into: the campaign's tag, else ``globaltag``, else the default."""
    if campaign and globaltag and globaltag != campaign_tag(campaign):
        raise ValueError(
            f"campaign {campaign!r} lives in global tag {campaign_tag(campaign)!r}; "
            f"do not also give global tag {globaltag!r}"
        )
    return campaign_tag(campaign) if campaign else (globaltag or DEFAULT_GLOBALTAG)


def prepare_checkpoint(path: str | Path, workdir: str | Path, *, model: str,
                       architecture_version: int | None = None, campaign: str | None = None,
                       manifest_fields: Mapping[str, Any] | None = None) -> tuple[Path, Manifest, bool]:
    """Check a safetensors checkpoint and give it a manifest if it has none.

    Returns (file to upload, its manifest, whether the manifest was added). A file with a
    manifest is used as it is, after checking that it names ``model`` (and
    ``architecture_version`` and ``campaign`` when given). A file without one is rewritten
    into ``workdir`` with a manifest built from the arguments; the original is untouched.
    """
    path = Path(path)
    if sniff_format(path) != SAFETENSORS:
        raise CheckpointFormatError(
            f"{path} is a legacy torch file; convert it first with "
            "`pxdbg checkpoint import-legacy FILE --model M -o FILE.safetensors`"
        )
    manifest = read_manifest(path)
    if manifest is not None:
        if architecture_version is not None:
            check_manifest(manifest, model, architecture_version)
        elif manifest.model != model:
            raise ManifestMismatchError(f"{path} is a checkpoint for model {manifest.model!r}, not {model!r}")
        if campaign and manifest.campaign and manifest.campaign != campaign:
            raise ManifestMismatchError(
                f"{path} was made for campaign {manifest.campaign!r}, not {campaign!r}"
            )
        return path, manifest, False
    if architecture_version is None:
        raise ManifestError(
            f"{path} carries no manifest, and no architecture version was given to write one"
        )
    fields = dict(manifest_fields or {})
    fields.setdefault("software", software_versions())
    manifest = Manifest(model=model, architecture_version=architecture_version, campaign=campaign, **fields)
    tensors, _ = read_checkpoint(path)
    out = Path(workdir) / path.name
    write_checkpoint(out, tensors, manifest)
    return out, manifest, True


#: Checkpoint payload formats: pxdbg's safetensors with the manifest inside, or the plain
#: torch state dict basf2's module loads, the manifest then only in the payload metadata.
FORMATS = ("safetensors", "basf2")


def payload_metadata(manifest: Manifest, checkpoint_format: str = "safetensors") -> dict[str, Any]:
    """The searchable payload metadata recorded with a checkpoint (a copy of the manifest;
    for the basf2 format the only copy pxdbg reads back)."""
    return {"kind": METADATA_KIND, "format": checkpoint_format, "manifest": manifest.to_dict()}


def prepare_basf2_checkpoint(path: str | Path, workdir: str | Path, *, model: str, architecture_version: int,
                             to_basf2: Callable[[Path], Mapping[str, Any]], campaign: str | None = None,
                             manifest_fields: Mapping[str, Any] | None = None) -> tuple[Path, Manifest, bool]:
    """A checkpoint (safetensors, or a legacy torch file) rewritten as the plain state dict
    basf2's module ``torch.load``s, plus the manifest to record in the payload metadata.

    ``to_basf2(path)`` returns the state dict of the default architecture (the caller's
    strict load test: basf2 builds no other). Returns (file to upload, manifest, whether
    the manifest was made here because the file had none)."""
    path = Path(path)
    manifest = read_manifest(path)
    added = manifest is None
    if manifest is None:
        fields = dict(manifest_fields or {})
        fields.setdefault("software", software_versions())
        manifest = Manifest(model=model, architecture_version=architecture_version, campaign=campaign, **fields)
    else:
        check_manifest(manifest, model, architecture_version)
        if campaign and manifest.campaign and manifest.campaign != campaign:
            raise ManifestMismatchError(f"{path} was made for campaign {manifest.campaign!r}, not {campaign!r}")
    out = write_basf2_checkpoint(Path(workdir) / f"{payload_name(model)}.pt", to_basf2(path))
    return out, manifest, added


def upload_checkpoint(store: Store, path: str | Path, *, model: str, campaign: str | None = None,
                      globaltag: str | None = None, iov: IntervalOfValidity | None = None,
                      architecture_version: int | None = None,
                      manifest_fields: Mapping[str, Any] | None = None,
                      user: str | None = None, checkpoint_format: str = "safetensors",
                      to_basf2: Callable[[Path], Mapping[str, Any]] | None = None) -> UploadResult:
    """Upload a checkpoint as payload ``PXDBackgroundGenerator_<model>`` and give it ``iov``
    (default: always) in the campaign's tag (or ``globaltag``).

    ``checkpoint_format="basf2"`` stores the plain torch state dict basf2's module loads
    (``to_basf2`` gives it, see :func:`prepare_basf2_checkpoint`), the manifest in the
    payload metadata only.

    Every check (campaign exists, tag accepts IoVs, manifest matches) runs before anything
    is written. On an SQL store payload and IoV are written in one transaction; elsewhere a
    refused IoV can leave an unreferenced payload revision, which is harmless.
    """
    if checkpoint_format not in FORMATS:
        raise ValueError(f"unknown checkpoint format {checkpoint_format!r}; use one of {', '.join(FORMATS)}")
    if checkpoint_format == "basf2" and (to_basf2 is None or architecture_version is None):
        raise ValueError("the basf2 format needs to_basf2 and the architecture version (the model code)")
    iov = iov if iov is not None else IntervalOfValidity.always()
    if campaign:
        campaign_status(store, campaign)  # UnknownCampaignError before any upload
    tag = target_tag(campaign, globaltag)
    info = store.get_tag(tag)
    if info.state not in _WRITABLE_STATES:
        raise FrozenTagError(
            f"global tag {tag!r} is {info.state.value}: it accepts no new checkpoints "
            "(only OPEN tags do, and RUNNING ones after their last covered run)"
        )
    with tempfile.TemporaryDirectory(prefix="pxdbg-upload-") as workdir:
        if checkpoint_format == "basf2":
            file, manifest, added = prepare_basf2_checkpoint(
                path, workdir, model=model, architecture_version=architecture_version, to_basf2=to_basf2,
                campaign=campaign, manifest_fields=manifest_fields)
        else:
            file, manifest, added = prepare_checkpoint(
                path, workdir, model=model, architecture_version=architecture_version,
                campaign=campaign, manifest_fields=manifest_fields,
            )
        name = payload_name(model)
        metadata = payload_metadata(manifest, checkpoint_format)
        filename = f"{name}.pt" if checkpoint_format == "basf2" else f"{name}.safetensors"
        one_transaction = getattr(store, "upload", None)
        if callable(one_transaction):
            record = one_transaction(tag, name, file, iov, metadata=metadata, user=user, filename=filename)
            payload = record.payload
        else:
            payload = store.add_payload(name, file, metadata=metadata, user=user, **_filename_option(store, filename))
            record = store.add_iov(tag, name, payload.revision, iov, user=user)
    log.info("uploaded %s r%d into %s with IoV %s", payload.name, payload.revision, tag, iov)
    return UploadResult(payload, record, tag, manifest, added)


def _filename_option(store: Store, filename: str) -> dict[str, str]:
    import inspect

    return {"filename": filename} if "filename" in inspect.signature(store.add_payload).parameters else {}


def attach_validation_report(store: Store, report_dir: str | Path, *, model: str, revision: int | None = None,
                             user: str | None = None) -> PayloadInfo:
    """Store a ``pxdbg validate -o DIR`` directory (report.json and its PNG plots) as the
    validation report of checkpoint ``PXDBackgroundGenerator_<model>`` revision ``revision``
    (default: the newest), so that the conditions web pages show it beside the checkpoint.
    The report is a payload of its own (see :mod:`conditions.payload_inspect`); the
    checkpoint payload, being immutable, is not touched."""
    checkpoint = store.get_payload(payload_name(model), revision)
    data = pack_report(report_dir, checkpoint)
    report = store.add_payload(report_name(checkpoint.name), data, user=user,
                               metadata=report_metadata(checkpoint, {"model": model}),
                               **_filename_option(store, "report.zip"))
    if not validates(report, checkpoint):  # the same bytes were stored before with other metadata
        raise InvalidValueError(f"{report.name} r{report.revision} holds these bytes already but does not "
                                f"describe itself as the report of {checkpoint.name} r{checkpoint.revision}")
    log.info("validation report %s r%d attached to %s r%d", report.name, report.revision,
             checkpoint.name, checkpoint.revision)
    return report


def publish_tag(store: Store, tag: str, *, target: GlobalTagState = GlobalTagState.PUBLISHED,
                user: str | None = None) -> GlobalTagState:
    """Walk ``tag`` along OPEN -> TESTING -> VALIDATED -> PUBLISHED up to ``target``."""
    target = GlobalTagState.parse(target)
    if target not in PUBLISH_PATH:
        raise ValueError(f"publish goes to one of {', '.join(s.value for s in PUBLISH_PATH)}, not {target.value}")
    state = store.get_tag(tag).state
    if state is GlobalTagState.OPEN:
        start = 0
    elif state in PUBLISH_PATH:
        start = PUBLISH_PATH.index(state) + 1
    else:
        start = len(PUBLISH_PATH)  # RUNNING or INVALID: the store refuses with the reason
    if state is not target and start >= len(PUBLISH_PATH):
        return store.set_tag_state(tag, target, user=user).state
    for step in PUBLISH_PATH[start:PUBLISH_PATH.index(target) + 1]:
        state = store.set_tag_state(tag, step, user=user).state
    return state


# -- legacy files and precision ------------------------------------------------------------

def import_legacy(source: str | Path, destination: str | Path, manifest: Manifest, *,
                  convert: Callable[[dict], Mapping[str, Any]] | None = None) -> Path:
    """Convert a legacy torch state-dict file (as basf2 distributes) into a safetensors
    checkpoint carrying ``manifest``.

    The file is read with ``torch.load(weights_only=True)``: a pickle that would import or
    run anything beyond tensors and plain containers raises UnsafeCheckpointError and
    nothing in it executes. ``convert`` gets the state dict and returns the one to store
    (e.g. the model's documented key adaptation, after a strict load test); it runs
    before anything is written, so a failure leaves no output file.
    """
    source, destination = Path(source), Path(destination)
    if sniff_format(source) == SAFETENSORS:
        raise CheckpointFormatError(f"{source} is already a safetensors checkpoint; nothing to import")
    if destination.resolve() == source.resolve():
        raise ValueError("the output file must differ from the legacy input")
    tensors, _ = read_checkpoint(source)
    if convert is not None:
        tensors = dict(convert(tensors))
    write_checkpoint(destination, tensors, manifest)
    return destination


def cast_checkpoint(source: str | Path, destination: str | Path, dtype: str = "float16") -> Path:
    """Rewrite a checkpoint with its floating-point tensors stored as ``dtype``.

    Integer tensors (e.g. batch-norm counters) are kept. ``load_state_dict`` copies the
    values back into the model's float32 parameters, so storage precision is the only
    change (float16 keeps ~3 significant digits; it halves the file). The stored dtype is
    noted in the manifest's ``description``.
    """
    import torch

    target = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}.get(dtype)
    if target is None:
        raise ValueError(f"unsupported storage dtype {dtype!r}; use float16, bfloat16 or float32")
    tensors, manifest = read_checkpoint(source)
    if manifest is None:
        raise ManifestError(f"{source} has no manifest; attach one before converting")
    cast = {k: (v.to(target) if v.is_floating_point() else v) for k, v in tensors.items()}
    note = f"weights stored as {dtype}"
    description = manifest.description or ""
    if note not in description:
        description = f"{description}; {note}" if description else note
    write_checkpoint(destination, cast, replace(manifest, description=description))
    return Path(destination)


def copy_tree_atomically(source: Path, destination: Path) -> None:
    """Replace directory ``destination`` by a copy of ``source`` (via a sibling temp dir).

    The copy is made world-readable (directories 0755, files 0644): it is package data
    that every user of an installation must read, whatever the temp files' modes were.
    """
    destination = Path(destination)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        shutil.copytree(source, staging, dirs_exist_ok=True)
        staging.chmod(0o755)
        for path in staging.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        if destination.exists():
            old = destination.with_name(f".{destination.name}.old")
            if old.exists():
                shutil.rmtree(old)
            destination.rename(old)
            staging.rename(destination)
            shutil.rmtree(old)
        else:
            staging.rename(destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
