"""Data sets: the registry (registry), generated sets (synthetic), real sets (real, download,
readers), the validation split (splits), test sets seen in training (leaks), MNIST-C
(mnist_c, corruptions), the covariate-shifted test set of full-spectrum detection (shifted) and
PixMix's mixing set (mixing).

The first stage of the data flow: imports nothing from lib.train, lib.evaluate or lib.report.
"""
