"""One style for every figure of the course, and the few plots the lessons need.

Every function draws on a matplotlib ``Axes`` (made for you when not given) and returns it;
the notebook cell ends with ``plt.show()``. Byte axes are labelled in binary units.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, MaxNLocator

from .measure import fmt_bytes

__all__ = ["use_style", "new_axes", "bytes_axis", "memory_curves", "bytes_bars", "stacked_bytes", "lenses",
           "PALETTE"]

# Colour-blind safe (Okabe and Ito), in the order the course introduces the memories.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]

STYLE = {
    "figure.figsize": (7.0, 3.6),
    "figure.dpi": 90,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.titleweight": "bold",
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.frameon": False,
    "legend.fontsize": 9,
    "axes.prop_cycle": mpl.cycler(color=PALETTE),
    "svg.hashsalt": "rlmemlib",
}


def use_style() -> None:
    """Apply the course's figure style to every later figure."""
    mpl.rcParams.update(STYLE)


def new_axes(title: str = "", ax=None):
    if ax is None:
        use_style()
        _, ax = plt.subplots()
    if title:
        ax.set_title(title)
    return ax


class _BinaryLocator(MaxNLocator):
    """Ticks at round numbers of the binary unit that fits the view (0, 2, 4, 6 MiB)."""

    def tick_values(self, vmin, vmax):
        span = max(abs(vmin), abs(vmax))
        unit = 1
        while span >= 1024 * unit and unit < 1024**4:
            unit *= 1024
        return [v * unit for v in super().tick_values(vmin / unit, vmax / unit)]


def bytes_axis(axis) -> None:
    """Label an axis's ticks as byte counts (``12.0 MiB``), placed at round binary values."""
    axis.set_major_locator(_BinaryLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: fmt_bytes(v)))


def memory_curves(curves: Sequence, title: str = "Memory against steps", ax=None, rss: bool = False,
                  xlabel: str = "steps (transitions added)"):
    """Plot ``MemoryCurve`` objects: bytes (traced, or RSS with ``rss=True``) against steps."""
    ax = new_axes(title, ax)
    for curve in curves:
        ys = curve.rss if rss else curve.traced
        ax.plot(curve.steps, ys, label=curve.label, lw=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("resident memory (RSS)" if rss else "memory (tracemalloc)")
    bytes_axis(ax.yaxis)
    if any(c.label for c in curves):
        ax.legend()
    return ax


def bytes_bars(values: Mapping[str, float], title: str = "Bytes per transition", ax=None,
               reference: tuple[str, float] | None = None, annotate: bool = True):
    """Horizontal bars of byte counts, with an optional reference line (e.g. the packed size, spec.nbytes)."""
    ax = new_axes(title, ax)
    labels = list(values)
    ax.barh(labels, [values[k] for k in labels], color=PALETTE[: len(labels)])
    ax.invert_yaxis()
    if annotate:
        for i, k in enumerate(labels):
            ax.text(values[k], i, " " + fmt_bytes(values[k]), va="center", fontsize=9)
    if reference is not None:
        ax.axvline(reference[1], color="black", ls="--", lw=1)
        ax.text(reference[1], len(labels) - 0.5, f" {reference[0]}", fontsize=9, va="bottom")
    bytes_axis(ax.xaxis)
    ax.set_xlabel("bytes")
    ax.grid(axis="y", visible=False)
    return ax


def stacked_bytes(parts: Mapping[str, Mapping[str, float]], title: str = "Where the bytes go",
                  ax=None, xlabel: str = "bytes per transition"):
    """One stacked bar per layout: ``{layout: {part: bytes}}``, its total printed at its end."""
    ax = new_axes(title, ax)
    layouts = list(parts)
    names: list[str] = []
    for layout in layouts:
        names += [p for p in parts[layout] if p not in names]
    left = [0.0] * len(layouts)
    for k, name in enumerate(names):
        widths = [parts[layout].get(name, 0) for layout in layouts]
        ax.barh(layouts, widths, left=left, label=name, color=PALETTE[k % len(PALETTE)])
        left = [a + b for a, b in zip(left, widths)]
    for i, total in enumerate(left):
        ax.text(total, i, " " + fmt_bytes(total), va="center", fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, max(left) * 1.18)  # room for the totals printed after the bars
    bytes_axis(ax.xaxis)
    ax.set_xlabel(xlabel)
    ax.grid(axis="y", visible=False)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, never over them
    return ax


def lenses(curve, title: str = "Two lenses on the same run", ax=None, events: Mapping[str, int] | None = None,
           xlabel: str = "step"):
    """Traced bytes and RSS growth of one ``MemoryCurve`` (recorded ``with_rss=True``) together.

    ``events`` marks steps with a labelled vertical line, e.g. ``{"del": 120}``.
    """
    ax = new_axes(title, ax)
    rss0 = curve.rss[0] if curve.rss else 0
    ax.plot(curve.steps, curve.traced, label="tracemalloc (exact, Python + numpy)", lw=2)
    if curve.rss:
        ax.plot(curve.steps, [r - rss0 for r in curve.rss], label="RSS growth (operating system)",
                lw=2, ls="--")
    for name, step in (events or {}).items():
        ax.axvline(step, color="grey", lw=1, ls=":")
        ax.text(step, ax.get_ylim()[1] * 0.95, f" {name}", fontsize=9, va="top")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("bytes")
    bytes_axis(ax.yaxis)
    ax.legend()
    return ax


def lenses_with_records(curve, records: Sequence[float], title: str = "Two lenses on the same run",
                        ax=None, events: Mapping[str, int] | None = None, xlabel: str = "step"):
    """``lenses``, plus tracemalloc's own records at each step of the curve.

    ``records`` holds ``tracemalloc.get_tracemalloc_memory()`` read after each
    ``curve.record``: the memory tracemalloc spends on its bookkeeping, which RSS counts.
    """
    ax = lenses(curve, title, ax, events, xlabel)
    ax.plot(curve.steps, list(records), label="tracemalloc's own records", lw=2, ls=":",
            color=PALETTE[3])
    ax.legend()
    return ax


__all__ += ["lenses_with_records"]


__all__ += ["frame_stacks", "budget_bars"]


def frame_stacks(stacks: Mapping[str, object], title: str = "Frame stacks", frame_titles=None):
    """Stacks of grey frames, one row per stack, oldest frame on the left: ``{label: (k, h, w)}``.

    Returns the figure's axes (a 2-D array). Frames are drawn in grey, 0 black and 255 white.
    """
    import numpy as np

    use_style()
    labels = list(stacks)
    k = max(np.asarray(stacks[name]).shape[0] for name in labels)
    fig, axes = plt.subplots(len(labels), k, figsize=(1.6 * k + 1.2, 1.75 * len(labels) + 0.4),
                             squeeze=False)
    for r, name in enumerate(labels):
        stack = np.asarray(stacks[name])
        for c in range(k):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            if c < len(stack):
                ax.imshow(stack[c], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            if r == 0 and frame_titles is not None:
                ax.set_title(frame_titles[c], fontsize=9, fontweight="normal")
        axes[r, 0].set_ylabel(name, fontsize=9)
    fig.suptitle(title, fontsize=11, fontweight="bold")
    fig.tight_layout()
    return axes


def budget_bars(values: Mapping[str, float], budgets: Mapping[str, float],
                title: str = "Memory needed against memory available", ax=None, log: bool = True,
                xlabel: str = "bytes"):
    """Horizontal bars of byte counts against vertical lines of memory budgets (``{name: bytes}``).

    With ``log=True`` the byte axis is logarithmic, so sizes a thousand times apart both show.
    """
    ax = new_axes(title, ax)
    labels = list(values)
    ax.barh(labels, [values[k] for k in labels], color=PALETTE[: len(labels)])
    ax.invert_yaxis()
    for i, k in enumerate(labels):
        ax.text(values[k], i, " " + fmt_bytes(values[k]), va="center", fontsize=9, zorder=3,
                bbox=dict(facecolor="white", edgecolor="none", pad=0.5, alpha=0.8))
    for j, (name, limit) in enumerate(budgets.items()):
        ax.axvline(limit, color="black", ls=("--", ":", "-.")[j % 3], lw=1.2)
        ax.text(limit, len(labels) - 0.55, f"{name} ", fontsize=9, rotation=90, ha="right",
                va="bottom")
    if log:
        ax.set_xscale("log")
        low = min(min(values.values()), min(budgets.values()))
        high = max(max(values.values()), max(budgets.values()))
        ax.set_xlim(low / 3, high * 8)
        ticks = [2.0 ** p for p in range(0, 60, 3) if low / 3 <= 2.0 ** p <= high * 8]
        ax.set_xticks(ticks)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: fmt_bytes(v)))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: ""))
    else:
        bytes_axis(ax.xaxis)
    ax.set_xlabel(xlabel)
    ax.grid(axis="y", visible=False)
    return ax


def mark_level(ax, value: float, label: str, axis: str = "y"):
    """A dashed line at ``value`` labelled with its size, and a view that shows a tick above it.

    For a level the reader should read off the axis (a planned size, a budget): the view is
    extended to the first round tick at or above ``value``, so the level never sits above the
    highest labelled tick.
    """
    get_lim, set_lim, line = ((ax.get_ylim, ax.set_ylim, ax.axhline) if axis == "y"
                              else (ax.get_xlim, ax.set_xlim, ax.axvline))
    locator = (ax.yaxis if axis == "y" else ax.xaxis).get_major_locator()
    line(value, color="black", ls="--", lw=1)
    for _ in range(8):  # the ticks depend on the view: extend it until one shows at or above value
        lo, hi = get_lim()
        ticks = sorted(locator.tick_values(lo, hi))
        if any(value <= t <= hi for t in ticks) or len(ticks) < 2:
            break
        above = [t for t in ticks if t >= value] or [ticks[-1] + (ticks[-1] - ticks[-2])]
        set_lim(lo, above[0] + 0.02 * (above[0] - lo))
    text = f" {label}: {fmt_bytes(value)}"
    if axis == "y":
        ax.text(ax.get_xlim()[0], value, text, va="bottom", fontsize=9)
    else:
        ax.text(value, ax.get_ylim()[1], text, va="top", fontsize=9)
    return ax


__all__ += ["mark_level"]


def dashboard(episode_ends: Sequence[int], episode_returns: Sequence[float], curves: Sequence,
              greedy: Sequence[float] | None = None, threshold: float | None = None,
              validation: tuple | None = None, window: int = 20,
              label: str = "training (epsilon-greedy)"):
    """The capstone's two panels: a training run's returns, and memory against steps.

    Left: the return of each training episode, averaged over ``window`` episodes, against the
    step where it ended; ``validation`` is ``(steps, mean returns)`` of greedy validations
    during training, drawn as points; ``greedy`` (returns of greedy test episodes after
    training) is drawn as its mean at the last step, with a bar from its lowest to its highest
    return; the ``threshold`` line is the environment's ``reward_threshold`` (it applies to that
    mean). Right: ``MemoryCurve`` objects, as :func:`memory_curves` draws them. Returns the figure.
    """
    import numpy as np

    use_style()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11.0, 4.6))
    returns = np.asarray(episode_returns, np.float64)
    width = max(1, min(window, len(returns)))
    smooth = np.convolve(returns, np.ones(width) / width, mode="valid")
    left.plot(list(episode_ends)[width - 1:], smooth, label=f"{label}, mean of {width}", lw=2)
    if validation is not None:
        left.plot(validation[0], validation[1], "s", ms=4, color=PALETTE[2],
                  label="greedy validations during training")
    if greedy is not None:
        scores = np.asarray(greedy, np.float64)
        at = episode_ends[-1] if len(episode_ends) else 0
        left.errorbar([at], [scores.mean()], yerr=[[scores.mean() - scores.min()],
                      [scores.max() - scores.mean()]], fmt="o", color=PALETTE[3], capsize=4,
                      label=f"greedy test of the kept weights: mean of {len(scores)} episodes")
    if threshold is not None:
        left.axhline(threshold, color="black", ls="--", lw=1)
        left.text(0, threshold, f" {threshold:g}: solved (the greedy mean)", fontsize=9,
                  va="bottom")
    left.set_title("Return against steps")
    left.set_xlabel("steps (transitions added)")
    left.set_ylabel("episode return")
    left.legend(loc="upper left", bbox_to_anchor=(0.0, -0.16), fontsize=8)  # under the axes
    memory_curves(curves, title="Memory against steps", ax=right)
    fig.tight_layout()
    return fig


__all__ += ["dashboard"]
