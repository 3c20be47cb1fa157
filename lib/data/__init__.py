"""Data sets: the registry, synthetic and real sets, downloads, MNIST-C, corruptions, mixing sets.

The first stage of the data flow: imports nothing from lib.train, lib.evaluate or lib.report.
"""
