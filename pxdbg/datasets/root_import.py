"""Import basf2 background-overlay ROOT files (PXDDigits) into pxd-digits, streaming.

Accepted layout (what basf2's RootOutput writes, and what uproot can write for tests):

- a TTree, by default named ``tree``;
- one entry per event; the digits of the ``PXDDigits`` array as four jagged branches, the
  members of ``Belle2::PXDDigit``:

  ==================  =========================================  =====================
  member              meaning                                    converted to
  ==================  =========================================  =====================
  ``m_sensorID``      VxdID (unsigned short), see below          ``sensor`` 0..39
  ``m_uCellID``       u cell, 0..249                             ``ucell``
  ``m_vCellID``       v cell, 0..767                             ``vcell``
  ``m_charge``        ADC value (unsigned short; float in old    ``charge``, rounded,
                      releases)                                  saturated at 255
  ==================  =========================================  =====================

  A branch is found by its last path component, any of ``PXDDigits.m_sensorID`` (basf2's
  split ``TClonesArray``: ``PXDDigits/PXDDigits.m_sensorID``, or a flat tree with branches
  of that name and a counter such as ``PXDDigits_``), ``PXDDigits_m_sensorID`` (uproot's
  record layout, counter ``nPXDDigits``), or ``PXDDigits/m_sensorID``. ``branch`` changes the
  ``PXDDigits`` prefix (e.g. for renamed overlay collections).
- optionally ``EventMetaData`` with ``m_experiment``, ``m_run``, ``m_event`` (same lookup
  rule); without it, events get ``exp``/``run`` from the arguments and ``evt`` = entry + 1.

VxdID bit layout (basf2 ``vxd/dataobjects/VxdID.h``, 16 bits, least significant first):
segment 5 bits (the PXD frame number, ignored here), sensor 3 bits, ladder 5 bits,
layer 3 bits: ``id = layer << 13 | ladder << 8 | sensor << 5 | segment``. Sensor 1.1.1 is
8480.

Per event, digits of the same pixel (e.g. from two readout frames) are merged by adding
their charges, saturating at 255, as the overlay does. Digits with a charge below
``threshold`` (default 1: zero-charge digits) are dropped. A digit on a sensor that is not
a PXD sensor, or with a cell outside the sensor, stops the import with an error naming the
file and entry: a file like that is not what it claims to be.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..digits import DigitsFormatError, DigitsWriter, PXDDigits
from ..sensors import LADDERS_PER_LAYER, N_SENSORS, N_UCELLS, N_VCELLS

log = logging.getLogger(__name__)

DIGIT_MEMBERS = ("m_sensorID", "m_uCellID", "m_vCellID", "m_charge")
EVENT_MEMBERS = ("m_experiment", "m_run", "m_event")

_PIXELS_PER_SENSOR = N_UCELLS * N_VCELLS
_PIXELS_PER_EVENT = N_SENSORS * _PIXELS_PER_SENSOR


class RootImportError(DigitsFormatError):
    """A ROOT file that cannot be imported as PXD digits."""


# ----------------------------------------------------------------------------------------
# VxdID


def encode_vxdid(layer, ladder, sensor, segment=0) -> np.ndarray:
    """basf2 VxdID integer(s) of (layer, ladder, sensor[, segment])."""
    layer, ladder, sensor, segment = (np.asarray(x, np.int64) for x in (layer, ladder, sensor, segment))
    return ((layer & 7) << 13 | (ladder & 31) << 8 | (sensor & 7) << 5 | (segment & 31)).astype(np.uint16)


def decode_vxdid(vxdid) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(layer, ladder, sensor, segment) arrays of VxdID integer(s)."""
    v = np.asarray(vxdid, np.int64)
    return (v >> 13) & 7, (v >> 8) & 31, (v >> 5) & 7, v & 31


def vxdid_to_index(vxdid) -> np.ndarray:
    """Sensor index 0..39 of VxdIDs; -1 where the id is not a PXD sensor."""
    layer, ladder, sensor, _ = decode_vxdid(vxdid)
    n_ladders = np.where(layer == 1, LADDERS_PER_LAYER[1], np.where(layer == 2, LADDERS_PER_LAYER[2], 0))
    valid = (ladder >= 1) & (ladder <= n_ladders) & ((sensor == 1) | (sensor == 2))
    index = np.where(layer == 1, 0, 16) + 2 * (ladder - 1) + (sensor - 1)
    return np.where(valid, index, -1)


# ----------------------------------------------------------------------------------------
# Branch lookup


def _find_branch(tree, prefix: str, member: str):
    """The branch of ``prefix``'s ``member`` (see the module docstring), or None."""
    wanted = {f"{prefix}.{member}", f"{prefix}_{member}"}
    matches = []
    for path in tree.keys(recursive=True, full_paths=True):
        parts = path.split("/")
        last = parts[-1]
        if last in wanted or (last == member and len(parts) > 1 and parts[-2] in (prefix, prefix + ".")):
            matches.append(path)
    if not matches:
        return None
    if len(matches) > 1:
        raise RootImportError(f"branch {prefix}.{member} is ambiguous: {matches}")
    return tree[matches[0]]


def _open_tree(file, path: Path, tree_name: str):
    if tree_name not in file:
        trees = [k.split(";")[0] for k, cls in file.classnames().items() if cls == "TTree"]
        raise RootImportError(f"{path}: no tree {tree_name!r} (trees: {trees or 'none'})")
    tree = file[tree_name]
    if not hasattr(tree, "keys") or not hasattr(tree, "num_entries"):
        raise RootImportError(f"{path}: {tree_name!r} is not a TTree")
    return tree


# ----------------------------------------------------------------------------------------
# Conversion


@dataclass
class ImportStats:
    """What an import did, for the log and the file attributes."""

    files: list[str] = field(default_factory=list)
    events: int = 0
    digits_read: int = 0
    digits_written: int = 0
    below_threshold: int = 0
    merged_duplicates: int = 0
    saturated: int = 0


def digits_from_jagged(sensor_id: np.ndarray, ucell: np.ndarray, vcell: np.ndarray, charge: np.ndarray,
                       counts: np.ndarray, *, threshold: int = 1, where: str = "",
                       stats: ImportStats | None = None) -> tuple[np.ndarray, PXDDigits]:
    """Flat member arrays of a block of events (``counts`` digits per event) to
    ``(offsets, digits)`` in pxd-digits order, validated, duplicates merged."""
    counts = np.asarray(counts, np.int64)
    n_events = len(counts)
    event = np.repeat(np.arange(n_events, dtype=np.int64), counts)
    index = vxdid_to_index(sensor_id)
    u = np.asarray(ucell, np.int64)
    v = np.asarray(vcell, np.int64)
    bad = np.flatnonzero((index < 0) | (u < 0) | (u >= N_UCELLS) | (v < 0) | (v >= N_VCELLS))
    if len(bad):
        i = int(bad[0])
        layer, ladder, sensor, _ = decode_vxdid(np.asarray(sensor_id)[i])
        raise RootImportError(
            f"{where}entry {int(event[i])}: digit with VxdID {int(np.asarray(sensor_id)[i])} "
            f"({int(layer)}.{int(ladder)}.{int(sensor)}), u={int(u[i])}, v={int(v[i])} is not a PXD pixel "
            f"({len(bad)} such digits in this block)")
    q = np.asarray(charge)
    q = np.rint(q).astype(np.int64) if np.issubdtype(q.dtype, np.floating) else q.astype(np.int64)
    key = event * _PIXELS_PER_EVENT + (index * N_UCELLS + u) * N_VCELLS + v
    order = np.argsort(key, kind="stable")
    key, q = key[order], q[order]
    n_read = len(key)
    if len(key):
        first = np.concatenate([[True], key[1:] != key[:-1]])
        starts = np.flatnonzero(first)
        merged = len(key) - len(starts)
        key, q = key[starts], np.add.reduceat(q, starts)
    else:
        merged = 0
    saturated = int((q > 255).sum())
    q = np.minimum(q, 255)
    keep = q >= max(threshold, 1)
    if stats is not None:
        stats.digits_read += n_read
        stats.merged_duplicates += merged
        stats.saturated += saturated
        stats.below_threshold += int((~keep).sum())
        stats.digits_written += int(keep.sum())
    key, q = key[keep], q[keep]
    ev = key // _PIXELS_PER_EVENT
    offsets = np.searchsorted(ev, np.arange(n_events + 1)).astype(np.int64)
    return offsets, PXDDigits.from_pixel_key(key - ev * _PIXELS_PER_EVENT, q.astype(np.uint8))


def iter_root_blocks(path: str | Path, *, tree: str = "tree", branch: str = "PXDDigits", step: int = 1000,
                     threshold: int = 1, stats: ImportStats | None = None):
    """Yield ``(offsets, digits, exp, run, evt)`` for blocks of up to ``step`` events of one
    ROOT file, reading only those entries' baskets (memory stays bounded by ``step``)."""
    import awkward as ak
    import uproot

    path = Path(path)
    try:
        file = uproot.open(path)
    except FileNotFoundError as exc:
        raise RootImportError(f"{path}: no such file") from exc
    except Exception as exc:  # uproot raises many types for a non-ROOT file
        raise RootImportError(f"{path}: not a readable ROOT file ({exc})") from exc
    with file:
        t = _open_tree(file, path, tree)
        branches = {m: _find_branch(t, branch, m) for m in DIGIT_MEMBERS}
        missing = [m for m, b in branches.items() if b is None]
        if missing:
            raise RootImportError(f"{path}: tree {tree!r} has no {branch} member branch(es) "
                                  f"{', '.join(missing)} (see pxdbg.datasets.root_import for the layout)")
        meta = {m: _find_branch(t, "EventMetaData", m) for m in EVENT_MEMBERS}
        n = int(t.num_entries)
        for a in range(0, n, step):
            b = min(a + step, n)
            arrays = {m: br.array(entry_start=a, entry_stop=b, library="ak") for m, br in branches.items()}
            counts = ak.to_numpy(ak.num(arrays["m_sensorID"], axis=1))
            for m in DIGIT_MEMBERS[1:]:
                if not np.array_equal(ak.to_numpy(ak.num(arrays[m], axis=1)), counts):
                    raise RootImportError(f"{path}: entries {a}..{b - 1}: {branch}.{m} and "
                                          f"{branch}.m_sensorID differ in length")
            flat = {m: ak.to_numpy(ak.flatten(arrays[m], axis=1)) for m in DIGIT_MEMBERS}
            offsets, digits = digits_from_jagged(flat["m_sensorID"], flat["m_uCellID"], flat["m_vCellID"],
                                                 flat["m_charge"], counts, threshold=threshold,
                                                 where=f"{path}: ", stats=stats)
            ids = {m: (None if br is None else np.asarray(br.array(entry_start=a, entry_stop=b, library="np")))
                   for m, br in meta.items()}
            yield offsets, digits, ids["m_experiment"], ids["m_run"], \
                (np.arange(a + 1, b + 1) if ids["m_event"] is None else ids["m_event"])


def import_root(paths: Sequence[str | Path] | str | Path, output: str | Path, *, tree: str = "tree",
                branch: str = "PXDDigits", exp: int = 0, run: int = 0, step: int = 1000, threshold: int = 1,
                max_events: int | None = None, progress: bool = False, conditions=None) -> ImportStats:
    """Convert one or more basf2 ROOT files into one pxd-digits file (atomically).

    ``exp``/``run`` are used where a file has no EventMetaData. Returns the import statistics,
    which also go into the output file's attributes. ``conditions`` (a
    :class:`registry.beam.BeamConditions`) labels the output with the beam conditions the
    overlay files were taken under, for training conditioned models.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("no input files")
    stats = ImportStats()
    bar = None
    if progress:
        import uproot
        from tqdm import tqdm

        total = 0
        for p in paths:
            try:
                with uproot.open(p) as f:
                    total += int(_open_tree(f, p, tree).num_entries)
            except RootImportError:
                raise
            except Exception as exc:
                raise RootImportError(f"{p}: not a readable ROOT file ({exc})") from exc
        if max_events is not None:
            total = min(total, max_events)
        bar = tqdm(total=total, desc="import", unit="evt")
    from .beam_labels import label_attrs

    attrs = {"source": "basf2 ROOT import (pxdbg.datasets.root_import)", "source_branch": branch,
             **label_attrs(conditions)}
    try:
        with DigitsWriter(output, attrs=attrs) as writer:
            for p in paths:
                stats.files.append(str(p))
                for offsets, digits, exps, runs, evts in iter_root_blocks(p, tree=tree, branch=branch, step=step,
                                                                          threshold=threshold, stats=stats):
                    nb = len(offsets) - 1
                    if max_events is not None:
                        nb = min(nb, max_events - stats.events)
                    if nb <= 0:
                        break
                    events = [PXDDigits(digits.sensor[x:y], digits.ucell[x:y], digits.vcell[x:y], digits.charge[x:y])
                              for x, y in zip(offsets[:nb], offsets[1:nb + 1])]
                    writer.append_many(events, exp=(exps[:nb] if exps is not None else [exp] * nb),
                                       run=(runs[:nb] if runs is not None else [run] * nb), evt=evts[:nb])
                    stats.events += nb
                    if bar is not None:
                        bar.update(nb)
                if max_events is not None and stats.events >= max_events:
                    break
            writer.set_attrs(source_files="\n".join(stats.files),
                             **{f"import_{key}": getattr(stats, key) for key in
                                ("digits_read", "digits_written", "below_threshold", "merged_duplicates", "saturated")})
    finally:
        if bar is not None:
            bar.close()
    log.info("imported %d events (%d digits) from %d file(s)", stats.events, stats.digits_written, len(stats.files))
    return stats


def write_basf2_like_root(path: str | Path, events: Iterable[PXDDigits], *, exp: int = 0, run: int = 0,
                          first_event: int = 1, tree: str = "tree", branch: str = "PXDDigits") -> Path:
    """Write digits as a flat TTree with basf2's member names (for tests and demos).

    Branches: ``{branch}.m_sensorID`` (VxdID, uint16), ``{branch}.m_uCellID``,
    ``{branch}.m_vCellID``, ``{branch}.m_charge`` (uint16 jagged, counter ``{branch}_``),
    and ``EventMetaData.m_experiment``/``m_run``/``m_event`` scalars. This is the layout of a
    split basf2 TClonesArray flattened one level; :func:`import_root` reads both.
    """
    import awkward as ak
    import uproot

    from ..sensors import SENSOR_IDS

    events = list(events)
    counts = np.array([len(e) for e in events], np.int64)

    def jag(values):
        return ak.unflatten(np.asarray(values, np.uint16), counts)

    sensor = np.concatenate([e.sensor for e in events]) if events else np.empty(0, np.uint8)
    ids = SENSOR_IDS[sensor.astype(np.int64)]
    data = {
        f"{branch}.m_sensorID": jag(encode_vxdid(ids[:, 0], ids[:, 1], ids[:, 2])),
        f"{branch}.m_uCellID": jag(np.concatenate([e.ucell for e in events]) if events else []),
        f"{branch}.m_vCellID": jag(np.concatenate([e.vcell for e in events]) if events else []),
        f"{branch}.m_charge": jag(np.concatenate([e.charge for e in events]) if events else []),
        "EventMetaData.m_experiment": np.full(len(events), exp, np.int32),
        "EventMetaData.m_run": np.full(len(events), run, np.int32),
        "EventMetaData.m_event": np.arange(first_event, first_event + len(events), dtype=np.uint32),
    }
    with uproot.recreate(path) as f:
        t = f.mktree(tree, {k: v.type if isinstance(v, ak.Array) else v.dtype for k, v in data.items()},
                     counter_name=lambda name: f"{branch}_")
        t.extend(data)
    return Path(path)
