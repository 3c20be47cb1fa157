"""mnist-safety: the plain Python code behind the Snakemake workflow.

Every module is importable and testable on its own; none imports Snakemake.
Command-line entry points are `python -m lib.<module> ...`. Base modules, importable from
every package: lib.common (atomic writes, seeds, devices, logging), lib.config (config
validation) and lib.layout (where every file of a run lives).
"""
