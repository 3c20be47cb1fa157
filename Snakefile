# mnist-safety: what PixMix, salt-and-pepper noise and Outlier Exposure buy an MNIST
# classifier. Entry point: config, validation, includes, the final target.
#
#   snakemake -n                                   # the plan of the default study
#   snakemake --profile profiles/local --configfile presets/demo.yaml
#   snakemake --profile profiles/slurm             # on a SLURM cluster

import sys

sys.path.insert(0, workflow.basedir)  # lib/ lives beside this file, wherever -d points

from snakemake.exceptions import WorkflowError
from lib.config import ConfigError, validate_config


configfile: "config.yaml"


try:
    config = validate_config(config)
except ConfigError as error:
    raise WorkflowError(str(error)) from None


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/calibrate.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        report="results/report.html",
