"""Figures of the report, drawn with matplotlib (Agg) and returned as PNG data URIs.

A data URI keeps the report one file that opens offline: `<img src="{{ uri }}">`.

    from lib.report.figures import roc_figure, score_histograms, training_figure
    uri = roc_figure({"gaussian": {"Base": (id_scores, ood_scores)}}, score_label="MSP")
    uri = score_histograms({"Base": (id_scores, ood_scores)}, "gaussian", "MSP")
    uri = training_figure({"Base seed 1": pandas.read_csv("train_log.csv")})

Every function takes plain arrays or frames, never paths, so the report decides
what to read and the figures stay testable.
"""
import base64
import io

import matplotlib

matplotlib.use("Agg")  # no display on cluster nodes; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

# Colour-blind-safe palette (Okabe & Ito); models keep one colour across figures.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]


def colour(i):
    return PALETTE[i % len(PALETTE)]


def png_data_uri(fig, dpi=110):
    """The figure as a base64 PNG data URI; closes the figure."""
    buffer = io.BytesIO()
    # Empty metadata: the same figure gives the same bytes, whatever matplotlib version wrote it.
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _grid(n_panels, max_columns, panel_size=(3.4, 3.0)):
    columns = min(n_panels, max_columns)
    rows = -(-n_panels // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(panel_size[0] * columns, panel_size[1] * rows),
                             squeeze=False)
    for ax in axes.ravel()[n_panels:]:
        ax.set_visible(False)
    return fig, axes.ravel()


def roc_figure(curves, score_label, max_columns=3):
    """ROC curves (OOD positive), one panel per OOD set, one line per model.

    `curves` maps set name -> {model label: (id_scores, ood_scores)}, higher score =
    more anomalous. Model labels keep their colour in every panel.
    """
    models = list(dict.fromkeys(m for per_set in curves.values() for m in per_set))
    fig, axes = _grid(len(curves), max_columns)
    for ax, (set_name, per_model) in zip(axes, curves.items()):
        for model, (id_scores, ood_scores) in per_model.items():
            scores = np.concatenate([id_scores, ood_scores])
            is_ood = np.concatenate([np.zeros(len(id_scores)), np.ones(len(ood_scores))])
            fpr, tpr, _ = roc_curve(is_ood, scores)
            ax.plot(fpr, tpr, color=colour(models.index(model)), lw=1.4, label=model)
        ax.plot([0, 1], [0, 1], color="#999", lw=0.8, ls=":")
        ax.set(title=set_name, xlabel="false positive rate (ID flagged)", ylabel="true positive rate (OOD caught)",
               xlim=(-0.01, 1.01), ylim=(-0.01, 1.01))
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right", fontsize=8, title=score_label, title_fontsize=8)
    fig.tight_layout()
    return png_data_uri(fig)


def score_histograms(per_model, set_name, score_label, max_columns=4, bins=40):
    """Histograms of ID-test vs OOD scores, one panel per model, shared bins per panel.

    `per_model` maps model label -> (id_scores, ood_scores). Densities, so sets of
    different sizes compare.
    """
    fig, axes = _grid(len(per_model), max_columns, panel_size=(3.2, 2.5))
    for ax, (model, (id_scores, ood_scores)) in zip(axes, per_model.items()):
        both = np.concatenate([id_scores, ood_scores])
        low, high = float(both.min()), float(both.max())
        if high <= low:
            high = low + 1e-6  # every score equal: one visible bin instead of an error
        edges = np.linspace(low, high, bins + 1)
        ax.hist(id_scores, bins=edges, density=True, alpha=0.6, color=PALETTE[0], label="ID test")
        ax.hist(ood_scores, bins=edges, density=True, alpha=0.6, color=PALETTE[3], label=set_name)
        ax.set(title=model, xlabel=f"{score_label} score (higher = more anomalous)", ylabel="density")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return png_data_uri(fig)


def training_figure(logs, columns=(("loss", "training loss"), ("train_accuracy", "training accuracy"))):
    """Curves per epoch, one panel per column of train_log.csv, one line per model run.

    `logs` maps a label such as "S&P +OE seed 1" -> DataFrame with an `epoch` column.
    Runs of one model (same label up to " seed") share a colour; seeds differ in style.
    """
    models = list(dict.fromkeys(label.split(" seed")[0] for label in logs))
    styles = ["-", "--", ":", "-."]
    fig, axes = _grid(len(columns), len(columns), panel_size=(4.6, 3.2))
    for ax, (column, title) in zip(axes, columns):
        seen = {}
        for label, log in logs.items():
            model = label.split(" seed")[0]
            style = styles[seen.get(model, 0) % len(styles)]
            seen[model] = seen.get(model, 0) + 1
            ax.plot(log["epoch"], log[column], color=colour(models.index(model)), ls=style,
                    marker="o" if len(log) < 3 else None, ms=4, lw=1.4, label=label)
        ax.set(title=title, xlabel="epoch", ylabel=title.split()[-1])
        last_epoch = max(int(log["epoch"].max()) for log in logs.values())
        if last_epoch <= 12:
            ax.set_xticks(range(1, last_epoch + 1))
            ax.set_xlim(0.5, last_epoch + 0.5)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return png_data_uri(fig)
