"""Evaluation: forward passes (forward), OOD scores (scores), metrics, per-model jobs (accuracy,
detection, calibration, robustness_tables, full_spectrum), tables (aggregate), near/far group
means (groups), differences between models and their statistics (differences, stats), ranks over
data sets (ranks).

Imports from lib.data and lib.train only (never from lib.report).
"""
