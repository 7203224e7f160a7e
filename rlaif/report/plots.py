"""The report's figures: one PNG each, drawn with matplotlib's Agg canvas (no pyplot, so no global state)."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

WIDTH, PANEL_HEIGHT, DPI = 11.0, 3.0, 100  # 1100 px: the page's width


def _save(fig: Figure, path: Path) -> str:
    fig.savefig(path, dpi=DPI)
    return path.name


def _panels(n: int, sharex: bool = False) -> tuple[Figure, list]:
    fig = Figure(figsize=(WIDTH, PANEL_HEIGHT), layout="constrained")
    axes = fig.subplots(1, n, sharex=sharex, squeeze=False)[0]
    return fig, list(axes)


def histograms(path: Path, panels: list[dict]) -> str:
    """Side-by-side histograms; a panel is {title, xlabel, series: {label: values} or bins: {bin label: count}, range}."""
    fig, axes = _panels(len(panels))
    for ax, panel in zip(axes, panels):
        if "bins" in panel:  # already counted (judge_stats' label histogram)
            labels, counts = list(panel["bins"]), list(panel["bins"].values())
            ax.bar(range(len(labels)), counts, color="#4c72b0")
            ax.set_xticks(range(len(labels)), [label.split("-")[0] for label in labels], rotation=0, fontsize=8)
        else:
            series = {k: v for k, v in panel["series"].items() if v}
            ax.hist(list(series.values()), bins=panel.get("n_bins", 10), range=panel.get("range"), stacked=True,
                    label=list(series), color=["#4c72b0", "#dd8452", "#55a868", "#c44e52"][:len(series)])
            if len(series) > 1:
                ax.legend(fontsize=8)
        ax.set_title(panel["title"], fontsize=10)
        ax.set_xlabel(panel["xlabel"], fontsize=9)
        ax.set_ylabel("count", fontsize=9)
    return _save(fig, path)


def grouped_bars(path: Path, title: str, groups: list[str], series: dict[str, list], reference: float | None = 0.5,
                 ylim: tuple[float, float] | None = (0, 1)) -> str:
    """Bars per group, one colour per series (None values are left out); a dashed reference line."""
    height = max(PANEL_HEIGHT, 1.0 + 0.18 * len(groups))
    fig = Figure(figsize=(WIDTH, height), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / max(len(series), 1)
    for i, (label, values) in enumerate(series.items()):
        xs = [g + i * width - 0.4 + width / 2 for g, v in enumerate(values) if v is not None]
        ax.bar(xs, [v for v in values if v is not None], width=width, label=label)
    if reference is not None:
        ax.axhline(reference, color="grey", linestyle="--", linewidth=1)
    ax.set_xticks(range(len(groups)), groups, rotation=30, ha="right", fontsize=8)
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_title(title, fontsize=10)
    fig.legend(fontsize=8, ncols=len(series), loc="outside upper center")
    return _save(fig, path)


def curves(path: Path, panels: list[dict], marks: list[float] = ()) -> str:
    """Line plots over steps; a panel is {title, ylabel, lines: {label: (steps, values)}}; `marks` draws red steps."""
    fig, axes = _panels(len(panels), sharex=True)
    for ax, panel in zip(axes, panels):
        for label, (xs, ys) in panel["lines"].items():
            ax.plot(xs, ys, marker="o" if len(xs) <= 20 else None, markersize=3, label=label)
        for x in marks:
            ax.axvline(x, color="#c44e52", linestyle=":", linewidth=1.2)
        ax.set_title(panel["title"], fontsize=10)
        ax.set_xlabel("step", fontsize=9)
        if panel.get("ylim"):
            ax.set_ylim(*panel["ylim"])
        if len(panel["lines"]) > 1:
            ax.legend(fontsize=7)
    return _save(fig, path)


def intervals(path: Path, title: str, labels: list[str], values: list[float], cis: list, reference: float | None = 0.5) -> str:
    """One point per label with its 95% interval as an error bar (horizontal, 0 to 1)."""
    fig = Figure(figsize=(WIDTH, max(1.6, 0.8 + 0.35 * len(labels))), layout="constrained")
    ax = fig.subplots()
    ys = list(range(len(labels)))[::-1]
    for y, v, ci in zip(ys, values, cis):
        err = [[max(v - ci[0], 0)], [max(ci[1] - v, 0)]] if ci else None
        ax.errorbar([v], [y], xerr=err, fmt="o", color="#4c72b0", capsize=4)
        ax.annotate(f"{v:.3f}", (v, y), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8)
    if reference is not None:
        ax.axvline(reference, color="grey", linestyle="--", linewidth=1)
    ax.set_yticks(ys, labels, fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.7, len(labels) - 0.3)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)
