"""Numbers published by the study this workflow starts from, shown beside ours.

MLSS 2022 project report (Base, S&P and PixMix MNIST models, with and without Outlier
Exposure), and the baseline of Outlier Exposure's own MNIST experiments.
Accuracies are fractions; AUROC values are fractions (the study printed percentages).
"""

# Study table 1: accuracy by augmentation (models without OE).
ACCURACY = {
    ("mnist", "none"): 0.95, ("mnist", "saltpepper"): 0.93, ("mnist", "pixmix"): 0.93,
    ("mnist_c", "none"): 0.82, ("mnist_c", "saltpepper"): 0.73, ("mnist_c", "pixmix"): 0.80,
}

# Study table 2: AUROC by (OOD set, score, augment, oe).
_AUROC_ROWS = {
    ("fashion_mnist", "msp"): [99.71, 99.99, 97.86, 98.47, 99.99, 99.99],
    ("fashion_mnist", "xent"): [99.97, 100.00, 99.92, 99.93, 100.0, 100.0],
    ("kmnist", "msp"): [99.42, 99.84, 97.75, 98.21, 99.96, 99.99],
    ("kmnist", "xent"): [99.90, 99.96, 99.87, 99.91, 100.0, 100.0],
}
_COLUMNS = [("none", "baseline"), ("none", "oe"), ("saltpepper", "baseline"), ("saltpepper", "oe"),
            ("pixmix", "baseline"), ("pixmix", "oe")]
AUROC = {(ood, score, aug, oe): v / 100.0
         for (ood, score), values in _AUROC_ROWS.items() for (aug, oe), v in zip(_COLUMNS, values)}

# Outlier Exposure's MNIST ConvNet, 10 epochs (baseline / with OE), Fashion-MNIST, MSP.
OE_REFERENCE = {"test_error": 0.0094, "fashion_mnist": {"baseline": {"fpr95": 0.0296, "auroc": 0.9931, "aupr": 0.9631},
                                                        "oe": {"fpr95": 0.0038, "auroc": 0.9992, "aupr": 0.9961}}}

# Outlier Exposure (Hendrycks, Mazeika, Dietterich, ICLR 2019), MNIST, MSP score, as printed
# in hendrycks/outlier-exposure MNIST/snapshots/*_test.txt under their protocol (OOD draws
# of 1/5 of the ID test size, mean of 10; FPR95 at the recall nearest 95%; AUPR with OOD
# positive). Fractions. Keys: model (baseline, oe = OE from scratch, oe_tune) -> quantity.
OE_PAPER = {
    "baseline": {"test_error": 0.0094,
                 ("fashion_mnist", "fpr95"): 0.0296, ("fashion_mnist", "auroc"): 0.9931, ("fashion_mnist", "aupr"): 0.9631,
                 ("gaussian", "fpr95"): 0.0021, ("gaussian", "auroc"): 0.9996, ("gaussian", "aupr"): 0.9981,
                 ("bernoulli", "fpr95"): 0.0104, ("bernoulli", "auroc"): 0.9981, ("bernoulli", "aupr"): 0.9901,
                 ("negated", "fpr95"): 0.0520, ("negated", "auroc"): 0.9855, ("negated", "aupr"): 0.9191},
    "oe": {"test_error": 0.0103,
           ("fashion_mnist", "fpr95"): 0.0038, ("fashion_mnist", "auroc"): 0.9992, ("fashion_mnist", "aupr"): 0.9961},
    "oe_tune": {"test_error": 0.0092,
                ("fashion_mnist", "fpr95"): 0.0065, ("fashion_mnist", "auroc"): 0.9990, ("fashion_mnist", "aupr"): 0.9952},
}
# The external_model_sets entry oe_paper (lib/config.py) holds their checkpoints under these names.
OE_PAPER_CHECKPOINTS = {"baseline": "oe_paper_baseline", "oe": "oe_paper_oe", "oe_tune": "oe_paper_oe_tune"}
