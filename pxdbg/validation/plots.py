"""PNG plots of a validation: one file per figure, generated (red) against reference (black).

Uses matplotlib's object API with the Agg canvas, never pyplot, so it runs headless and
leaves no global figure state behind in a training process.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from ..sensors import N_SENSORS, sensor_name
from .metrics import (
    CLUSTER_CHARGE_BIN,
    CLUSTER_CHARGE_MAX,
    CLUSTER_SIZE_MAX,
    SampleSummary,
    ValidationReport,
)

GEN_STYLE = dict(color="tab:red", label="generated")
REF_STYLE = dict(color="black", label="reference")
SENSOR_LABELS = [sensor_name(i) for i in range(N_SENSORS)]
_LAYER_EDGE = 15.5  # between sensor index 15 (1.8.2) and 16 (2.1.1)


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110)
    return path


def _normalized(hist: np.ndarray) -> np.ndarray:
    total = hist.sum()
    return hist / total if total else hist.astype(float)


def _step(ax, edges: np.ndarray, values: np.ndarray, **style) -> None:
    ax.stairs(values, edges, linewidth=1.4, **style)


def _counts_note(gen: SampleSummary, ref: SampleSummary) -> str:
    return f"events: generated {gen.n_events}, reference {ref.n_events}"


def plot_occupancy(gen: SampleSummary, ref: SampleSummary, report: ValidationReport, path: Path) -> Path:
    fig = Figure(figsize=(12, 6.5), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1.3])
    x = np.arange(N_SENSORS)
    for summary, style, dx in ((ref, REF_STYLE, -0.12), (gen, GEN_STYLE, 0.12)):
        occ = summary.occupancy
        mean = occ.mean(axis=0) if summary.n_events else np.full(N_SENSORS, np.nan)
        err = occ.std(axis=0, ddof=1) / np.sqrt(summary.n_events) if summary.n_events > 1 else None
        top.errorbar(x + dx, mean * 100, yerr=None if err is None else err * 100, fmt="o", ms=4, capsize=2, **style)
    top.set_ylabel("mean occupancy [%]")
    top.set_title(f"PXD occupancy per sensor ({_counts_note(gen, ref)})")
    top.legend()
    top.axvline(_LAYER_EDGE, color="grey", ls=":", lw=1)
    top.text(7.5, 0.98, "layer 1", transform=top.get_xaxis_transform(), ha="center", va="top", color="grey")
    top.text(27.5, 0.98, "layer 2", transform=top.get_xaxis_transform(), ha="center", va="top", color="grey")
    rel = np.asarray(report.occupancy_relative_error, float) * 100
    bottom.bar(x, np.nan_to_num(rel), color=np.where(rel >= 0, "tab:red", "tab:blue"))
    bottom.axhline(0, color="black", lw=0.8)
    bottom.axvline(_LAYER_EDGE, color="grey", ls=":", lw=1)
    bottom.set_ylabel("(gen - ref) / ref [%]")
    bottom.set_xlabel("sensor (layer.ladder.sensor)")
    bottom.set_xticks(x, SENSOR_LABELS, rotation=90, fontsize=8)
    return _save(fig, path)


def plot_occupancy_distributions(gen: SampleSummary, ref: SampleSummary, path: Path) -> Path:
    fig = Figure(figsize=(16, 10), layout="constrained")
    axes = fig.subplots(5, 8)
    occ_g, occ_r = gen.occupancy * 100, ref.occupancy * 100
    for s, ax in enumerate(axes.flat):
        values = np.concatenate([occ_g[:, s], occ_r[:, s]])
        hi = float(values.max()) if len(values) else 1.0
        edges = np.linspace(0.0, hi * 1.05 if hi > 0 else 1.0, 26)
        for occ, style in ((occ_r, REF_STYLE), (occ_g, GEN_STYLE)):
            h, _ = np.histogram(occ[:, s], bins=edges)
            _step(ax, edges, _normalized(h), **style)
        ax.set_title(sensor_name(s), fontsize=9)
        ax.tick_params(labelsize=7)
        if s // 8 == 4:
            ax.set_xlabel("occupancy [%]", fontsize=8)
        if s % 8 == 0:
            ax.set_ylabel("fraction of events", fontsize=8)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"Per-event occupancy distribution of each sensor ({_counts_note(gen, ref)})")
    return _save(fig, path)


def _plot_histograms(gen_hist: np.ndarray, ref_hist: np.ndarray, edges: np.ndarray, path: Path, *,
                     xlabel: str, ylabel: str, title: str, xlim: tuple[float, float] | None = None) -> Path:
    """Reference and generated histograms, each normalised to unit sum, on a log scale."""
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    for hist, style in ((ref_hist, REF_STYLE), (gen_hist, GEN_STYLE)):
        _step(ax, edges, _normalized(hist), **style)
    ax.set_yscale("log")
    if xlim is not None:
        ax.set_xlim(*xlim)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    return _save(fig, path)


def plot_charge_spectrum(gen: SampleSummary, ref: SampleSummary, report: ValidationReport, path: Path) -> Path:
    return _plot_histograms(
        gen.charge_hist, ref.charge_hist, np.arange(257) - 0.5, path, xlim=(0, 256),
        xlabel="pixel charge [ADU]", ylabel="fraction of fired pixels",
        title=f"Pixel charge spectrum (W1 = {report.charge_w1:.3g} ADU, KS = {report.charge_ks:.3g})")


def plot_cluster_size(gen: SampleSummary, ref: SampleSummary, report: ValidationReport, path: Path) -> Path:
    return _plot_histograms(
        gen.cluster_size_hist, ref.cluster_size_hist, np.arange(CLUSTER_SIZE_MAX + 2) - 0.5, path,
        xlim=(0.5, CLUSTER_SIZE_MAX + 0.5),
        xlabel=f"cluster size [pixels] (last bin: >= {CLUSTER_SIZE_MAX})", ylabel="fraction of clusters",
        title=(f"Cluster size, 8-connected (mean {report.mean_cluster_size_generated:.2f} generated, "
               f"{report.mean_cluster_size_reference:.2f} reference)"))


def plot_cluster_charge(gen: SampleSummary, ref: SampleSummary, report: ValidationReport, path: Path) -> Path:
    edges = np.arange(0, CLUSTER_CHARGE_MAX + 2 * CLUSTER_CHARGE_BIN, CLUSTER_CHARGE_BIN, dtype=float)
    return _plot_histograms(
        gen.cluster_charge_hist, ref.cluster_charge_hist, edges, path,
        xlabel=f"cluster charge [ADU] ({CLUSTER_CHARGE_BIN} ADU bins, last bin: >= {CLUSTER_CHARGE_MAX})",
        ylabel="fraction of clusters",
        title=f"Cluster charge (W1 = {report.cluster_charge_w1:.3g} ADU, KS = {report.cluster_charge_ks:.3g})")


def plot_positions(gen: SampleSummary, ref: SampleSummary, report: ValidationReport, path: Path) -> Path | None:
    """Where pixels fire: u and v profiles per layer (the v-pitch regions, gradients and
    edges show here)."""
    if gen.hit_u_hist is None or ref.hit_u_hist is None:
        return None
    fig = Figure(figsize=(13, 7), layout="constrained")
    axes = fig.subplots(2, 2)
    for layer in range(2):
        for col, (g, r, cells, name) in enumerate(((gen.hit_u_hist, ref.hit_u_hist, 250, "u (row)"),
                                                    (gen.hit_v_hist, ref.hit_v_hist, 768, "v (column)"))):
            ax = axes[layer, col]
            edges = np.arange(cells + 1) - 0.5
            for hist, style in ((r[layer], REF_STYLE), (g[layer], GEN_STYLE)):
                _step(ax, edges, _normalized(hist), **style)
            ax.set_xlim(-0.5, cells - 0.5)
            ax.set_xlabel(f"{name} cell")
            ax.set_ylabel("fraction of fired pixels")
            ax.set_title(f"layer {layer + 1}: {name.split()[0]} profile", fontsize=10)
    axes[0, 0].legend()
    fig.suptitle(f"Hit positions (KS: u {report.hit_u_ks:.3g}, v {report.hit_v_ks:.3g}; {_counts_note(gen, ref)})")
    return _save(fig, path)


def plot_cluster_extent(gen: SampleSummary, ref: SampleSummary, report: ValidationReport, path: Path) -> Path | None:
    """Cluster lengths along u and v: compact clusters against long, thin grazing tracks."""
    if gen.extent_u_hist is None or ref.extent_u_hist is None:
        return None
    fig = Figure(figsize=(12, 5), layout="constrained")
    axes = fig.subplots(1, 2)
    edges = np.arange(CLUSTER_SIZE_MAX + 2) - 0.5
    for ax, g, r, name, w1 in ((axes[0], gen.extent_u_hist, ref.extent_u_hist, "u", report.cluster_extent_u_w1),
                               (axes[1], gen.extent_v_hist, ref.extent_v_hist, "v", report.cluster_extent_v_w1)):
        for hist, style in ((r, REF_STYLE), (g, GEN_STYLE)):
            _step(ax, edges, _normalized(hist), **style)
        ax.set_yscale("log")
        ax.set_xlim(0.5, CLUSTER_SIZE_MAX + 0.5)
        ax.set_xlabel(f"cluster extent in {name} [cells] (last bin: >= {CLUSTER_SIZE_MAX})")
        ax.set_ylabel("fraction of clusters")
        ax.set_title(f"extent in {name} (W1 = {w1:.3g} cells)")
    axes[0].legend()
    return _save(fig, path)


def plot_spearman(matrix: np.ndarray, title: str, path: Path, *, difference: bool = False) -> Path:
    fig = Figure(figsize=(9.5, 8.5), layout="constrained")
    ax = fig.subplots()
    m = np.ma.masked_invalid(np.asarray(matrix, float))
    if difference:
        lim = max(float(np.nanmax(np.abs(matrix))) if np.isfinite(matrix).any() else 0.0, 1e-3)
        image = ax.imshow(m, cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -lim, lim))
        label = "Spearman rho (generated - reference)"
    else:
        image = ax.imshow(m, cmap="RdBu_r", vmin=-1, vmax=1)
        label = "Spearman rho"
    fig.colorbar(image, ax=ax, shrink=0.85, label=label)
    ticks = np.arange(N_SENSORS)
    ax.set_xticks(ticks, SENSOR_LABELS, rotation=90, fontsize=7)
    ax.set_yticks(ticks, SENSOR_LABELS, fontsize=7)
    for edge in (_LAYER_EDGE,):
        ax.axvline(edge, color="black", lw=0.8)
        ax.axhline(edge, color="black", lw=0.8)
    ax.set_xlabel("sensor (layer.ladder.sensor)")
    ax.set_ylabel("sensor (layer.ladder.sensor)")
    ax.set_title(title)
    return _save(fig, path)


def write_plots(gen: SampleSummary, ref: SampleSummary, report: ValidationReport, out_dir: str | Path) -> list[Path]:
    """Write every validation figure into ``out_dir``; returns the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = [
        plot_occupancy(gen, ref, report, out / "occupancy.png"),
        plot_occupancy_distributions(gen, ref, out / "occupancy_distributions.png"),
        plot_charge_spectrum(gen, ref, report, out / "charge_spectrum.png"),
        plot_cluster_size(gen, ref, report, out / "cluster_size.png"),
        plot_cluster_charge(gen, ref, report, out / "cluster_charge.png"),
        plot_positions(gen, ref, report, out / "positions.png"),
        plot_cluster_extent(gen, ref, report, out / "cluster_extent.png"),
        plot_spearman(report.spearman_generated, f"Inter-sensor occupancy correlation: generated "
                      f"({gen.n_events} events)", out / "spearman_generated.png"),
        plot_spearman(report.spearman_reference, f"Inter-sensor occupancy correlation: reference "
                      f"({ref.n_events} events)", out / "spearman_reference.png"),
        plot_spearman(report.spearman_difference, "Spearman difference, generated - reference "
                      f"(mean |diff| {report.spearman_mean_abs_difference:.3f})", out / "spearman_difference.png",
                      difference=True),
    ]
    return [f for f in files if f is not None]
