"""Turning the workers' raw timings into figures: medians, ratios, diffs, the table and the chart.

Numpy only; matplotlib is imported for the chart alone.
"""

import numpy as np

from bench.configs import PEERS, SYSTEMS, TORCH, gflop_per_image

SYSTEM_WIDTH = max(len(system) for system in SYSTEMS) + 2


def summarize(times_by_round: list) -> dict:
    """Median of the per-process medians and their spread ((max - min) / median, in %)."""
    medians = [float(np.median(times)) for times in times_by_round]
    centre = float(np.median(medians))
    return {"round_medians_s": medians, "median_s": centre,
            "spread_pct": 100.0 * (max(medians) - min(medians)) / centre}


def max_abs_diff(path: str | None, reference_path: str | None) -> float | None:
    if path is None or reference_path is None:
        return None
    return float(np.max(np.abs(np.load(path).astype(np.float64) - np.load(reference_path))))


def fastest_peer(entries: dict) -> str | None:
    """The peer runtime with the lowest median time among those measured, or None."""
    peers = [system for system in PEERS if system in entries]
    return min(peers, key=lambda system: entries[system]["median_s"]) if peers else None


def rows(group, batch: int, results: dict, peak_gflops: float | None) -> list[dict]:
    """One row per system for a config: img/s, ratio vs PyTorch and vs the fastest peer, first call, diff,
    GFLOP/s, % of peak."""
    entries = {}
    for system, per_round in results.items():
        batches = [next(b for b in r["batches"] if b["batch"] == batch) for r in per_round]
        entries[system] = {
            **summarize([b["times_s"] for b in batches]),
            "cpu_median_s": summarize([b["cpu_times_s"] for b in batches])["median_s"],
            "first_call_s": batches[0]["first_call_s"],
            "logits": batches[0].get("logits"),
            "loadavg": [b["loadavg"] for b in batches],
        }
    torch_entry = entries.get(TORCH)
    peer = fastest_peer(entries)
    gflop = gflop_per_image(group.variant, group.resolution) * batch
    out = []
    for system in SYSTEMS:
        entry = entries.get(system)
        if entry is None:
            continue
        row = {"config": f"{group.name} b{batch}", "variant": group.variant, "resolution": group.resolution,
               "batch": batch, "system": system, **entry}
        row["images_per_s"] = batch / entry["median_s"]
        row["gflops"] = gflop / entry["median_s"]
        row["pct_of_peak"] = 100.0 * row["gflops"] / peak_gflops if peak_gflops else None
        if torch_entry is not None:
            row["ratio_vs_pytorch"] = torch_entry["median_s"] / entry["median_s"]
            row["cpu_ratio_vs_pytorch"] = torch_entry["cpu_median_s"] / entry["cpu_median_s"]
            rounds = zip(torch_entry["round_medians_s"], entry["round_medians_s"], strict=True)
            row["paired_ratios"] = [t / s for t, s in rounds]
            row["max_abs_diff_vs_pytorch"] = max_abs_diff(entry["logits"], torch_entry["logits"])
        if peer is not None:
            row["fastest_peer"] = peer
            row["ratio_vs_fastest_peer"] = entries[peer]["median_s"] / entry["median_s"]
        out.append(row)
    return out


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def table(result_rows: list[dict], skipped: dict) -> str:
    header = (f"{'config':<16}{'system':<{SYSTEM_WIDTH}}{'img/s':>9}{'ms/call':>10}{'spread%':>9}{'vs torch':>9}"
              f"{'vs peer':>8}"
              f"{'1st call s':>11}{'max|diff|':>11}{'GFLOP/s':>9}{'%peak':>7}{'cpu ratio':>10}")
    lines = [header, "-" * len(header)]
    for row in result_rows:
        lines.append(
            f"{row['config']:<16}{row['system']:<{SYSTEM_WIDTH}}{row['images_per_s']:>9.2f}"
            f"{1e3 * row['median_s']:>10.1f}{row['spread_pct']:>9.1f}{_fmt(row.get('ratio_vs_pytorch'), '.2f'):>9}"
            f"{_fmt(row.get('ratio_vs_fastest_peer'), '.2f'):>8}"
            f"{row['first_call_s']:>11.2f}{_fmt(row.get('max_abs_diff_vs_pytorch'), '.1e'):>11}"
            f"{row['gflops']:>9.1f}{_fmt(row['pct_of_peak'], '.1f'):>7}"
            f"{_fmt(row.get('cpu_ratio_vs_pytorch'), '.2f'):>10}"
        )
    for (config, system), reason in skipped.items():
        lines.append(f"{config:<16}{system:<{SYSTEM_WIDTH}}skipped: {reason}")
    peers = sorted({row["fastest_peer"] for row in result_rows if "fastest_peer" in row})
    if peers:
        lines.append(f"vs peer: ratio to the fastest peer runtime of each config ({', '.join(peers)})")
    return "\n".join(lines)


def _colour(system: str, peer: str | None) -> str:
    if system == TORCH:
        return "#c44e52"
    if system == peer:
        return "#55a868"
    return "#8c8c8c" if system in PEERS else "#4c72b0"


def chart(result_rows: list[dict], path) -> None:
    """Images/s per config and system, one panel per config: PyTorch red (dashed level), peers grey,
    the fastest peer green (dotted level), ours blue."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    configs = list(dict.fromkeys(row["config"] for row in result_rows))
    # Wide enough for the legend's one row even with a single config.
    figure, axes = plt.subplots(1, len(configs), figsize=(max(3.8 * len(configs), 6.4), 4.6), squeeze=False)
    for axis, config in zip(axes[0], configs, strict=True):
        config_rows = [row for row in result_rows if row["config"] == config]
        peer = next((row["fastest_peer"] for row in config_rows if "fastest_peer" in row), None)
        names = [row["system"] for row in config_rows]
        speeds = [row["images_per_s"] for row in config_rows]
        axis.bar(range(len(names)), speeds, color=[_colour(name, peer) for name in names])
        for row in config_rows:
            if row["system"] == TORCH:
                axis.axhline(row["images_per_s"], color="#c44e52", linestyle="--", linewidth=1)
            if row["system"] == peer:
                axis.axhline(row["images_per_s"], color="#55a868", linestyle=":", linewidth=1)
        for x, row in enumerate(config_rows):
            if row.get("ratio_vs_pytorch") is not None:
                axis.annotate(f"{row['ratio_vs_pytorch']:.2f}x", (x, row["images_per_s"]), ha="center",
                              va="bottom", fontsize=6)
        axis.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
        axis.set_title(config, fontsize=9)
        axis.set_ylabel("images / s", fontsize=8)
    legend = [Patch(color=_colour(TORCH, None), label="PyTorch eager"), Patch(color="#4c72b0", label="ours"),
              Patch(color="#8c8c8c", label="peer runtime"), Patch(color="#55a868", label="fastest peer")]
    figure.suptitle("CvT inference, images/s (labels: ratio vs PyTorch)", fontsize=9, y=0.99)
    figure.legend(handles=legend, loc="upper center", bbox_to_anchor=(0.5, 0.955), fontsize=7, ncol=4)
    figure.tight_layout(rect=(0, 0, 1, 0.89))
    figure.savefig(path, dpi=120)
    plt.close(figure)
