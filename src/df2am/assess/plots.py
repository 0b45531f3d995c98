"""CMC-curve plot of an evaluation run (PNG, matplotlib's Agg canvas, no display needed).

::

    from df2am.assess.plots import plot_cmc

    plot_cmc({"DF²AM": (cmc_mean, cmc_std)}, "runs/x/cmc.png", title="SYSU-MM01 all-search")

Each curve is the mean CMC over the trials (fractions or percent, see ``percent``) with a
shaded ±1 std band. Several curves (e.g. trained vs. untrained in ``df2am demo``) share one
axis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = ["plot_cmc"]


def plot_cmc(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float] | None]],
    path: str | Path,
    *,
    title: str = "",
    percent: bool = True,
) -> Path:
    """Draw mean CMC curves (rank 1..R) with std bands and save them as a PNG.

    Args:
        curves: label → (mean CMC, std CMC or None); each a length-R sequence in percent
            (``percent=True``) or in fractions of 1.
        path: the PNG to write (parent folders are created).
        title: the axes title.
        percent: whether the values are percentages (sets the y-axis range and label).

    Returns:
        The written path.
    """
    # The object-oriented API with an explicit Agg canvas never touches pyplot's global
    # backend state, so it is safe in a headless job and inside a caller's own matplotlib use.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not curves:
        raise ValueError("plot_cmc needs at least one curve")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(5.0, 3.6), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    top = 100.0 if percent else 1.0
    max_rank = 1
    for label, (mean, std) in curves.items():
        mean_arr = np.asarray(mean, dtype=np.float64)
        ranks = np.arange(1, len(mean_arr) + 1)
        max_rank = max(max_rank, len(mean_arr))
        (line,) = ax.plot(ranks, mean_arr, marker="o", markersize=2.5, linewidth=1.4, label=label)
        if std is not None:
            std_arr = np.asarray(std, dtype=np.float64)
            ax.fill_between(
                ranks,
                np.clip(mean_arr - std_arr, 0.0, top),
                np.clip(mean_arr + std_arr, 0.0, top),
                color=line.get_color(),
                alpha=0.2,
                linewidth=0,
            )
    ax.set_xlim(1, max_rank)
    ax.set_ylim(0, top * 1.02)
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)" if percent else "matching rate")
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path
