"""The report's statistics: how differences are tested, what the study can detect, and ranks.

    from lib.report.statistics import cd_diagram, detectable_lines, METHOD_PARAGRAPH
    uri = cd_diagram({"Base": 2.6, "PixMix": 1.2, "S&P": 2.2}, cd=0.95, title="models over 10 OOD sets")
    lines = detectable_lines(detectable_df, differences_df)   # one sentence per (metric, set)

Reads nothing itself: the callers pass the frames of results/tables/differences.csv,
detectable.csv and ranks.csv (lib.evaluate.differences, lib.evaluate.ranks).
"""
import numpy as np
import pandas as pd

from lib.evaluate import stats
from lib.evaluate.differences import ALPHA, BEYOND, POWER
from lib.report.figures import png_data_uri, plt

METRIC_NAMES = {"accuracy": "accuracy", "auroc": "AUROC", "ece": "ECE"}
SET_NAMES = {"id_test": "ID test", "mnist_c": "MNIST-C"}
METHOD_PARAGRAPH = (
    "Every difference between two models (model minus reference) has a 95% interval from a two-level "
    "bootstrap over seeds and test images. {n_boot} times, the test images are drawn with "
    "replacement, the same draw for both models and for every seed, because all of them were tested on the same "
    "images (ID and OOD images drawn separately for AUROC, each MNIST-C corruption on its own), and the metric is "
    "computed again for every model and seed. The seed level is taken in closed form: seeds are paired (seed s of "
    "one model with seed s of the other) and their spread s enters as s²/S for S seeds. The interval is "
    "diff ± √(t²<sub>S−1</sub> se²<sub>seeds</sub> + z² se²<sub>images</sub>) (Banerjee 1961), the p-value the "
    "largest α whose interval still holds zero. Holm's correction runs over each family of comparisons: all rows "
    "of one metric in the differences table (every model against Base), or all the comparisons one sentence of the "
    "summary draws on. A difference is called beyond noise when its Holm-adjusted p-value is below {alpha} and it "
    "is at least the smallest difference the study can detect for its metric and set ({power:.0%} power); otherwise "
    "it is within noise. With one seed the interval covers the test images only, and no difference is called "
    "real or noise."
)


def _points(value):
    return f"{value * 100:.2f}"


def _nice_below(value):
    """The largest of 1, 2, 5 x 10^k not above `value` (> 0)."""
    exponent = np.floor(np.log10(value))
    for step in (5, 2, 1):
        if step * 10 ** exponent <= value:
            return float(step * 10 ** exponent)
    return float(10 ** exponent)


def read_detectable(path):
    """detectable.csv (lib.evaluate.differences) as a DataFrame, or None when `path` is None."""
    return None if path is None else pd.read_csv(path, keep_default_na=False, na_values=[""])


def detectable_lines(detectable, differences, label):
    """One sentence per (metric, set) row of `detectable`: the smallest difference the study's
    seeds can detect, and how many seeds a smaller one (the largest the table calls within
    noise, else half the detectable one) would need. With one seed: what the test images
    alone allow. label(metric, set) names the row."""
    lines = []
    for r in detectable.itertuples(index=False):
        what = label(r.metric, r.set)
        if not np.isfinite(r.mdd):
            lines.append(f"{what}: one seed, no seed-to-seed spread to measure; the test images alone would hide "
                         f"differences below {_points(r.floor)} points.")
            continue
        text = f"{what}: {_points(r.mdd)} points with {r.n_seeds} seeds"
        rows = differences[(differences["metric"] == r.metric) & (differences["set"] == r.set)
                           & differences["family"].str.startswith("table/") & (differences["verdict"] != BEYOND)
                           ] if differences is not None else differences
        largest = float(rows["diff"].abs().max()) if rows is not None and len(rows) else 0.0
        target = _nice_below(min(largest if largest > 0 else r.mdd / 2, r.mdd * 0.99))
        needed = stats.seeds_needed(target, r.seed_sd, r.example_se, r.alpha, r.power)
        if needed is None:
            text += (f"; {_points(target)} points is out of reach with these test images (their noise alone hides "
                     f"differences below {_points(r.floor)} points)")
        else:
            text += f"; {_points(target)} points would need about {needed} seeds"
        lines.append(text + ".")
    return lines


def detectable_intro(detectable):
    """The sentence before the lines: what they mean, or that the study has one seed."""
    if not np.isfinite(detectable["mdd"]).any():
        return ("This study has one seed per model, so it cannot measure how much training runs differ: the "
                "intervals cover the test images only, and no difference is called real or noise. Run two or more "
                "seeds (config key seeds) to test differences.")
    return (f"Smallest difference this study can detect (power {POWER:.0%}, two-sided α = {ALPHA}, from the observed "
            "seed-to-seed spread and the test images' own noise; lib.evaluate.stats.detectable_difference). A "
            "difference smaller than this is never called real, here or in the summary.")


def detectable_block(detectable, differences, source, label, metrics=None):
    """{"intro", "lines", "source", "one_seed"} for the rows of `metrics` (all when None), or None
    without detectable.csv or rows."""
    if detectable is None:
        return None
    rows = detectable if metrics is None else detectable[detectable["metric"].isin(metrics)]
    if rows.empty:
        return None
    return {"intro": detectable_intro(rows), "lines": detectable_lines(rows, differences, label), "source": source,
            "one_seed": not np.isfinite(rows["mdd"]).any()}


def cliques(ranks, cd):
    """Maximal groups (by rank order) whose mean ranks lie within `cd` of each other: [[names]]."""
    order = sorted(ranks, key=ranks.get)
    groups = []
    for i, first in enumerate(order):
        members = [name for name in order[i:] if ranks[name] - ranks[first] <= cd]
        if len(members) > 1 and not any(set(members) <= set(g) for g in groups):
            groups.append(members)
    return groups


def cd_diagram(ranks, cd, title):
    """Demsar's (2006) critical-difference diagram: mean ranks on an axis (1 = best, left), the
    CD as a bar above it, and thick lines joining items not told apart (within CD)."""
    k = len(ranks)
    order = sorted(ranks, key=ranks.get)
    left, right = order[: (k + 1) // 2], order[(k + 1) // 2:][::-1]  # the best on the left, the worst on the right
    groups = cliques(ranks, cd)
    first_label = -0.5 - 0.3 * len(groups)                     # labels start below the clique bars
    bottom = first_label - 0.55 * (max(len(left), len(right)) - 1) - 0.5
    fig, ax = plt.subplots(figsize=(7.0, 0.5 * (2.4 - bottom)))
    ax.set_xlim(-1.2, k + 2.2)
    ax.set_ylim(bottom, 2.0)
    ax.axis("off")
    ax.plot([1, k], [0, 0], "k-", linewidth=1)
    for tick in range(1, k + 1):
        ax.plot([tick, tick], [0, 0.15], "k-", linewidth=1)
        ax.text(tick, 0.25, str(tick), ha="center", va="bottom", fontsize=8)
    ax.plot([1, 1 + cd], [1.2, 1.2], "k-", linewidth=1.5)
    for end in (1, 1 + cd):
        ax.plot([end, end], [1.1, 1.3], "k-", linewidth=1)
    ax.text(1 + cd / 2, 1.35, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=8)
    for i, group in enumerate(groups):
        y = -0.3 - 0.3 * i
        ax.plot([ranks[group[0]] - 0.04, ranks[group[-1]] + 0.04], [y, y], "-", color="#D55E00", linewidth=3,
                solid_capstyle="butt")
    for names, x_text, align in ((left, 0.6, "right"), (right, k + 0.4, "left")):
        for row, name in enumerate(names):
            y = first_label - 0.55 * row
            ax.plot([ranks[name], ranks[name], x_text], [0, y, y], "-", color="0.35", linewidth=0.8, zorder=0)
            ax.text(x_text + (-0.08 if align == "right" else 0.08), y, f"{name} ({ranks[name]:.2f})", ha=align,
                    va="center", fontsize=8)
    ax.set_title(title, fontsize=9)
    return png_data_uri(fig)


def rank_figures(ranks, source, item_label=str, comparison_text=None):
    """One CD diagram per comparison in ranks.csv (lib.evaluate.ranks): dicts of id, title, uri (a
    PNG data URI), friedman (a sentence), cd and source. `item_label` turns an item (a model
    'none/oe', a score 'msp') into its label; comparison_text: {comparison: title}."""
    if ranks is None or ranks.empty:
        return []
    figures = []
    for comparison, part in ranks.groupby("comparison", sort=False):
        first = part.iloc[0]
        title = (comparison_text or {}).get(comparison, comparison)
        blocks = "corruptions" if comparison.endswith("mnistc") else "OOD sets"
        items = "scores" if comparison.startswith("scores") else "models"
        labels = {item_label(item): float(rank) for item, rank in zip(part["item"], part["mean_rank"])}
        if np.isfinite(first["p"]):
            friedman = (f"Friedman test over {first['n_blocks']} {blocks} and {first['k']} {items}: "
                        f"χ² = {first['chi2']:.2f}, p = {first['p']:.2g}")
        else:
            friedman = (f"No Friedman test: it needs three or more {items} and two or more {blocks} "
                        f"(here {first['k']} and {first['n_blocks']})")
        uri = cd_diagram(labels, float(first["cd"]), f"{title}: mean rank over {first['n_blocks']} {blocks}")
        figures.append({"id": f"cd-{comparison}", "title": title, "uri": uri, "friedman": friedman,
                        "cd": float(first["cd"]), "alpha": float(first["alpha"]), "source": source})
    return figures
