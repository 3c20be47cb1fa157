"""mnist-safety: the plain Python code behind the Snakemake workflow.

Every module is importable and testable on its own; none imports Snakemake.
Command-line entry points are `python -m lib.<module> ...`.
"""
