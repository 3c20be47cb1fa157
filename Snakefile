# mnist-safety: what PixMix, salt-and-pepper noise and Outlier Exposure buy an MNIST
# classifier. Entry point: config, validation, includes, the final target.
#
#   snakemake -n                                   # the plan of the default study
#   snakemake --profile profiles/local --configfile presets/demo.yaml
#   snakemake --cores 4 --configfile presets/demo.yaml   # no profile: profiles/default still applies
#   snakemake --profile profiles/slurm             # on a SLURM cluster

import os
import sys

sys.path.insert(0, workflow.basedir)  # lib/ lives beside this file, wherever -d points

from snakemake.exceptions import WorkflowError
from lib.config import ConfigError, load_config_file, validate_config

# Snakemake's own message for a YAML syntax error names neither the file nor the line.
# (A broken --configfile fails inside Snakemake before this file runs: `python -m lib.config FILE`.)
if os.path.exists("config.yaml"):
    try:
        load_config_file("config.yaml")
    except ConfigError as error:
        raise WorkflowError(str(error)) from None


configfile: os.path.join(workflow.basedir, "config.yaml")


try:
    config = validate_config(config)
except ConfigError as error:
    raise WorkflowError(str(error)) from None


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/pixmix.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/robustness.smk"
include: "workflow/rules/calibrate.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        report=layout.report_file(),
