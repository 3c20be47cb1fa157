"""Evaluation: forward passes, OOD scores, metrics, calibration, robustness, tables, statistics.

Imports from lib.data and lib.train only (never from lib.report).
"""
