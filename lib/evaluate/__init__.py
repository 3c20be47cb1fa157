"""Evaluation: forward passes (forward), OOD scores (scores), metrics, per-model jobs (accuracy,
detection, calibration, robustness_tables), tables (aggregate), differences and statistics.

Imports from lib.data and lib.train only (never from lib.report).
"""
