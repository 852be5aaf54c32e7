"""Provenance of generated events: which checkpoint made them, from where, and how.

A generated pxd-digits file carries one JSON document, the dataset ``provenance``
(format ``pxdbg-provenance`` version 1; readers of pxd-digits ignore it):

* ``pxdbg_version``, ``created`` (UTC), ``seed``, ``model``, the requested
  ``globaltag``/``campaigns`` and ``sources`` policy;
* ``checkpoints``: each checkpoint used, once: payload ``name``, ``revision``, ``sha256``
  and ``md5`` (for a fixed file: its name and hashes), ``globaltag``, ``campaign``,
  ``iov``, the answering ``source`` (a URL without credentials, never a local cache or
  temp path), ``manifest_id``, ``model``, ``architecture_version``, ``demo`` and
  ``untrained``;
* ``runs``: every (exp, run) in the file with its event count and the index of the
  checkpoint that made it; for a conditioned model (``sparse-beam``) also the run's
  ``beam_conditions``: the values, the payload (name, revision, hashes, tag, IoV, source)
  or ``"given"``, and how the model met them (``status`` interpolation or extrapolation,
  ``extrapolation`` distance and driver, ``forced``, the training samples and weights).

``pxdbg dataset info FILE`` shows it; ``pxdbg overlay`` carries the background's (and the
signal's, if any) into the merged file. With it, a file made through a server is traced
back to the exact payload: name and revision identify it there, and the hashes prove it.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

FORMAT = "pxdbg-provenance"
VERSION = 1
#: Name of the dataset holding the JSON document in a pxd-digits file.
DATASET = "provenance"


def pxdbg_version() -> str:
    try:
        from importlib.metadata import version

        return version("pxdbg")
    except Exception:  # run from a checkout without installing
        return "unknown"


def _file_hashes(path: Path) -> tuple[str, str]:
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            sha.update(chunk)
            md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest()


def checkpoint_record(resolved: Any, manifest: Any, *, campaigns: Sequence[str] = ()) -> dict[str, Any]:
    """What identifies one checkpoint: ``resolved`` as the module got it (a registry
    answer with payload, tag, IoV and source, or a fixed file), and its manifest."""
    from registry.campaigns import campaign_tag

    payload = getattr(resolved, "payload", None)
    tag = getattr(resolved, "tag", None)
    iov = getattr(resolved, "iov", None)
    record: dict[str, Any] = {}
    if payload is not None:
        # Sources that record only MD5 (basf2 snapshots): the SHA-256 of the verified file.
        sha256 = payload.sha256 or _file_hashes(Path(resolved.path))[0]
        record.update(payload=payload.name, revision=payload.revision, sha256=sha256, md5=payload.checksum,
                      source=getattr(resolved, "source", None))
    else:
        # A fixed checkpoint file: the file's own hashes identify it.
        sha256, md5 = _file_hashes(Path(resolved.path))
        record.update(payload=None, revision=None, sha256=sha256, md5=md5, source="file",
                      file=Path(resolved.path).name)
    campaign = next((c for c in campaigns if tag is not None and campaign_tag(c) == tag), None)
    record.update(
        globaltag=tag,
        campaign=campaign if campaign is not None else getattr(manifest, "campaign", None),
        iov=list(iov.as_tuple()) if iov is not None else None,
        manifest_id=manifest.manifest_id if manifest is not None else None,
        model=getattr(manifest, "model", None),
        architecture_version=getattr(manifest, "architecture_version", None),
        training_steps=getattr(manifest, "training_steps", None),
        demo=bool(getattr(resolved, "demo", False) or getattr(manifest, "demo", False)
                  or getattr(manifest, "untrained", False)),
        untrained=bool(getattr(manifest, "untrained", False)),
    )
    return record


class ProvenanceRecorder:
    """Collects the provenance of one output file while a job runs: call :meth:`add_run`
    after each ``begin_run`` of the generator, then :meth:`document`."""

    def __init__(self, *, model: str, seed: int, globaltag: str | None = None,
                 campaigns: Sequence[str] = (), settings: dict[str, Any] | None = None):
        self.model = model
        self.seed = seed
        self.globaltag = globaltag
        self.campaigns = list(campaigns)
        self.settings = dict(settings or {})
        self.created = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
        self.checkpoints: list[dict[str, Any]] = []
        self.runs: list[dict[str, Any]] = []
        self._index: dict[Any, int] = {}

    def add_run(self, exp: int, run: int, events: int, generator: Any) -> dict[str, Any]:
        """Record that ``events`` events of (exp, run) come from ``generator``'s current
        checkpoint; returns that checkpoint's record."""
        resolved = generator.resolved
        key = getattr(resolved, "payload_key", None) or str(resolved.path)
        index = self._index.get(key)
        if index is None:
            index = self._index[key] = len(self.checkpoints)
            self.checkpoints.append(checkpoint_record(resolved, generator.manifest, campaigns=self.campaigns))
        entry = {"exp": int(exp), "run": int(run), "events": int(events), "checkpoint": index}
        record = getattr(generator, "conditions_record", None)
        conditions = record() if callable(record) else None
        if conditions is not None:
            entry["beam_conditions"] = conditions
        self.runs.append(entry)
        return self.checkpoints[index]

    def document(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "version": VERSION, "pxdbg_version": pxdbg_version(), "created": self.created,
            "seed": self.seed, "model": self.model, "globaltag": self.globaltag, "campaigns": self.campaigns,
            "settings": self.settings, "checkpoints": self.checkpoints, "runs": self.runs,
        }


def write(writer: Any, document: dict[str, Any]) -> None:
    """Store ``document`` in the file a DigitsWriter is writing."""
    writer.set_document(DATASET, json.dumps(document, sort_keys=True))


def read(reader: Any) -> dict[str, Any] | None:
    """The provenance document of an open DigitsReader (None when the file has none)."""
    text = reader.document(DATASET)
    return json.loads(text) if text is not None else None


def for_overlay(signal: dict[str, Any] | None, background: dict[str, Any] | None,
                *, signal_file: str, background_file: str) -> dict[str, Any]:
    """The provenance of an overlay output: both inputs' documents, as they were."""
    return {"format": FORMAT, "version": VERSION, "pxdbg_version": pxdbg_version(),
            "created": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
            "overlay": {"signal": {"file": signal_file, "provenance": signal},
                        "background": {"file": background_file, "provenance": background}}}


def describe(document: dict[str, Any], indent: str = "  ") -> list[str]:
    """Lines for people (``pxdbg dataset info``)."""
    if "overlay" in document:
        lines = [f"{indent}overlay made by pxdbg {document.get('pxdbg_version')} at {document.get('created')}"]
        for role in ("signal", "background"):
            part = document["overlay"][role]
            lines.append(f"{indent}{role}: {part['file']}")
            if part.get("provenance"):
                lines += describe(part["provenance"], indent + "  ")
            else:
                lines.append(f"{indent}  (no provenance recorded)")
        return lines
    lines = [f"{indent}made by pxdbg {document.get('pxdbg_version')} at {document.get('created')}, "
             f"model {document.get('model')}, seed {document.get('seed')}"]
    for index, c in enumerate(document.get("checkpoints", [])):
        runs = [r for r in document.get("runs", []) if r.get("checkpoint") == index]
        shown = ", ".join(f"{r['exp']}/{r['run']}" for r in runs[:6]) + (" ..." if len(runs) > 6 else "")
        what = (f"{c['payload']} r{c['revision']}" if c.get("payload") else f"file {c.get('file')}")
        lines.append(f"{indent}checkpoint {index}: {what}" + ("  ** DEMO, not a physics model **" if c.get("demo") else ""))
        lines.append(f"{indent}  sha256 {c.get('sha256')}  md5 {c.get('md5')}")
        lines.append(f"{indent}  global tag {c.get('globaltag')}, campaign {c.get('campaign')}, IoV "
                     f"{','.join(str(v) for v in c['iov']) if c.get('iov') else '-'}, source {c.get('source')}")
        lines.append(f"{indent}  manifest {c.get('manifest_id')}: model {c.get('model')} "
                     f"v{c.get('architecture_version')}, training steps {c.get('training_steps')}"
                     + (", untrained" if c.get("untrained") else ""))
        lines.append(f"{indent}  runs (exp/run): {shown} ({sum(r['events'] for r in runs)} events)")
    conditioned = [r for r in document.get("runs", []) if r.get("beam_conditions")]
    if conditioned:
        lines.append(f"{indent}beam conditions per run:")
    for r in conditioned[:20]:
        c = r["beam_conditions"]
        v = c.get("values", {})
        origin = f"{c['payload']} r{c['revision']}" if c.get("payload") else c.get("source", "?")
        status = c.get("status")
        if status == "extrapolation":
            status = f"EXTRAPOLATION {c.get('extrapolation', 0):.0%} in {c.get('extrapolated_driver')}" + (
                " (forced)" if c.get("forced") else "")
        lines.append(f"{indent}  {r['exp']}/{r['run']}: L {v.get('luminosity')}e34, HER {v.get('her_current')} mA, "
                     f"LER {v.get('ler_current')} mA, injection {v.get('injection_fraction')} ({origin}; {status})")
    if len(conditioned) > 20:
        lines.append(f"{indent}  ... ({len(conditioned) - 20} more runs)")
    return lines
