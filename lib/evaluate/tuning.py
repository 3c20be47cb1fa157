"""Score hyperparameters: the papers' values, or the best on validation OOD sets.

ODIN's temperature and epsilon, knn's k, ReAct's percentile and ViM's dimension default to
the values of their papers (lib.evaluate.scores). With `validation_ood_sets` in the config,
the evaluate job picks each from a small grid (GRIDS) by the mean AUROC of the held-out ID
validation images (id_val) against each validation OOD set; the test OOD sets are never
seen. GEN's gamma and M stay at the paper's values.

    from lib.evaluate.tuning import paper_record, tune_posthoc, tune_odin
    record = paper_record(width=50, odin=True)            # every score: its paper's values
    record["scores"]["knn"]                               # {"values": {"k": 50}, "source": "paper default", ...}
    record = tune_posthoc(record, train_feats, W, b, id_val_feats, {"blobs": feats}, ["blobs"])
    record = tune_odin(record, odin_logits_of, ["blobs"])  # odin_logits_of(T, eps) -> (id_val, {set: ood})
    chosen(record, "knn")                                 # {"k": 20}

The record is what the evaluate job writes to layout.hyperparameters_file (JSON) and the
report's detection section shows: per score its values, their source ("paper default" or
"tuned on <sets>"), the grid and the validation AUROC of the chosen values.
"""
import numpy as np

from lib.evaluate.scores import (GEN_GAMMA, GEN_TOP_M, KNN_K, ODIN_EPSILON, ODIN_TEMPERATURE, REACT_PERCENTILE,
                                 fit_react, fit_vim, knn_distances, msp_score, normalise_rows, react_score,
                                 vim_dimension, vim_score)

PAPER_DEFAULT = "paper default"
SELECTION = ("mean AUROC of the ID validation split (id_val) against each validation OOD set; "
             "ties go to the paper's value, then to the first in the grid")

# The grids searched with validation OOD sets; each holds the paper's value. ODIN's paper
# searched T in {1, 2, 5, ..., 1000} and 21 epsilons in [0, 0.004]: a coarser grid of the
# same range. ViM's dimensions are shares of the feature width (vim_grid).
GRIDS = {
    "odin": {"temperature": (1.0, 10.0, 100.0, 1000.0), "epsilon": (0.0, 0.0005, 0.001, 0.0014, 0.002, 0.004)},
    "knn": {"k": (1, 5, 10, 20, 50, 100, 200)},
    "react": {"percentile": (80.0, 85.0, 90.0, 95.0, 99.0)},
}
VIM_SHARES = (0.125, 0.25, 0.5, 0.75)


def vim_grid(width):
    """ViM dimensions tried for `width` features: shares of it and the paper's rule, in 1..width-1."""
    dims = {int(round(share * width)) for share in VIM_SHARES} | {vim_dimension(width)}
    return tuple(sorted(d for d in dims if 1 <= d < width))


def paper_values(width):
    """{score: {hyperparameter: the paper's value}} for penultimate features of `width` units."""
    return {"odin": {"temperature": ODIN_TEMPERATURE, "epsilon": ODIN_EPSILON},
            "knn": {"k": KNN_K},
            "vim": {"dimension": vim_dimension(width)},
            "react": {"percentile": REACT_PERCENTILE},
            "gen": {"gamma": GEN_GAMMA, "top_m": "all classes" if GEN_TOP_M is None else GEN_TOP_M}}


def paper_record(width, odin):
    """The record of a model whose scores all use the papers' values (no validation OOD sets).
    `odin`: whether ODIN logits are computed (the `odin` score is listed)."""
    scores = {name: {"values": values, "source": PAPER_DEFAULT, "grid": None, "validation_auroc": None}
              for name, values in paper_values(width).items() if odin or name != "odin"}
    return {"validation_ood_sets": [], "selection": None, "scores": scores}


def chosen(record, score):
    """The hyperparameter values `score` uses, from a record."""
    return record["scores"][score]["values"]


def mean_auroc(id_scores, ood_scores_by_set):
    """Mean over the validation OOD sets of the AUROC of each set against the ID scores."""
    # Imported here: scikit-learn takes about a second to import, and every evaluate job
    # imports this module, though only a run with validation_ood_sets tunes anything.
    from lib.evaluate.metrics import auroc

    return float(np.mean([auroc(id_scores, ood) for ood in ood_scores_by_set.values()]))


def best_of(candidates, aurocs, default):
    """The candidate with the highest AUROC; ties go to `default`, then to the earliest."""
    top = max(aurocs)
    tied = [c for c, a in zip(candidates, aurocs) if a >= top - 1e-12]
    return (default if default in tied else tied[0]), top


def _tuned(record, score, grid, candidates, aurocs, sets):
    best, top = best_of(candidates, aurocs, record["scores"][score]["values"])
    record["scores"][score] = {"values": best, "source": "tuned on " + ", ".join(sets), "grid": grid,
                               "validation_auroc": top}


def tune_posthoc(record, train_features, weight, bias, id_features, ood_features, sets):
    """knn's k, ViM's dimension and ReAct's percentile, each picked on the validation sets.

    `train_features` [N, D] of the training split, the head (`weight` [C, D], `bias` [C]),
    `id_features` of id_val and `ood_features` {set: [M, D]} of the validation OOD sets.
    Updates and returns `record` (paper_record's form).
    """
    record.update(validation_ood_sets=list(sets), selection=SELECTION)
    bank = normalise_rows(train_features)
    ks = [k for k in GRIDS["knn"]["k"] if k <= len(bank)]
    id_knn = knn_distances(id_features, bank, ks)
    ood_knn = {name: knn_distances(f, bank, ks) for name, f in ood_features.items()}
    _tuned(record, "knn", {"k": ks}, [{"k": k} for k in ks],
           [mean_auroc(id_knn[:, i], {n: d[:, i] for n, d in ood_knn.items()}) for i in range(len(ks))], sets)

    dims = vim_grid(train_features.shape[1])
    aurocs = []
    for dim in dims:
        fit = fit_vim(train_features, weight, bias, dim)
        stats = (weight, bias, fit["vim_origin"], fit["vim_residual_basis"], fit["vim_alpha"])
        aurocs.append(mean_auroc(vim_score(id_features, *stats), {n: vim_score(f, *stats) for n, f in ood_features.items()}))
    _tuned(record, "vim", {"dimension": list(dims)}, [{"dimension": d} for d in dims], aurocs, sets)

    percentiles = GRIDS["react"]["percentile"]
    aurocs = []
    for percentile in percentiles:
        threshold = fit_react(train_features, percentile)["react_threshold"]
        aurocs.append(mean_auroc(react_score(id_features, weight, bias, threshold),
                                 {n: react_score(f, weight, bias, threshold) for n, f in ood_features.items()}))
    _tuned(record, "react", {"percentile": list(percentiles)}, [{"percentile": p} for p in percentiles], aurocs, sets)
    return record


def tune_odin(record, odin_logits_of, sets):
    """ODIN's temperature and epsilon, picked on the validation sets.

    `odin_logits_of(temperature, epsilon)` returns (ODIN logits of id_val [N, C], {set: ODIN
    logits [M, C]}) of the validation OOD sets: the evaluate job's forward and backward passes.
    """
    record.update(validation_ood_sets=list(sets), selection=SELECTION)
    grid = GRIDS["odin"]
    candidates = [{"temperature": t, "epsilon": e} for t in grid["temperature"] for e in grid["epsilon"]]
    aurocs = []
    for values in candidates:
        id_logits, ood_logits = odin_logits_of(values["temperature"], values["epsilon"])
        aurocs.append(mean_auroc(msp_score(id_logits), {n: msp_score(z) for n, z in ood_logits.items()}))
    _tuned(record, "odin", {k: list(v) for k, v in grid.items()}, candidates, aurocs, sets)
    return record
