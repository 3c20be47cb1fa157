# Stand-in for a preempted training job in tests/test_slurm.py: the first
# attempt of `train` records its SLURM job id in results/first_attempt.txt and
# waits to be cancelled (scancel); the retry finds that file, the way a real
# retry finds its checkpoint, and finishes.
#   snakemake --snakefile tests/slurm/standin/cancelled_once.smk -d /tmp/run --profile ...

localrules: all


rule all:
    input:
        "results/train.txt",


rule train:
    output:
        "results/train.txt",
    shell:
        "if [ -e results/first_attempt.txt ]; then"
        "  (echo RESUMED_FROM=$(cat results/first_attempt.txt); echo SLURM_JOB_ID=$SLURM_JOB_ID) > {output}.tmp"
        "  && mv {output}.tmp {output};"
        " else"
        "  mkdir -p results && echo $SLURM_JOB_ID > results/first_attempt.tmp"
        "  && mv results/first_attempt.tmp results/first_attempt.txt && sleep 600;"
        " fi"
