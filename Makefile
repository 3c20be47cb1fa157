# make demo       the whole study on the offline demo preset; prints the report's path
# make test       the test suite: tests/unit, tests/workflow, tests/cluster (see tests/conftest.py)
# make test-fast  the unit tier alone, a few minutes
# make bench      the speed benchmarks
# make slurm-plan what a run through profiles/slurm submits (PLAN_ARGS: more snakemake options)
VENV ?= .venv
PY := $(VENV)/bin/python
SNAKEMAKE := $(VENV)/bin/snakemake
# Large CPU batches page-fault their activation buffers back in every step unless glibc
# keeps freed memory; set for our own jobs only (see docs/performance.md).
JOB_ENV := MALLOC_MMAP_THRESHOLD_=17179869184 MALLOC_TRIM_THRESHOLD_=17179869184 MALLOC_TOP_PAD_=536870912

# pytest-xdist workers of `make test`: more than the cores, since most of a workflow test is
# one Snakemake process thinking or a SLURM job waiting in the queue (tests/conftest.py).
TEST_WORKERS ?= 3
# Whole files to a worker, in the order tests/conftest.py gives them (docs/testing.md).
XDIST = -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

.PHONY: demo test test-fast bench slurm-plan

$(VENV)/.installed: requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	touch $@

demo: $(VENV)/.installed
	$(JOB_ENV) $(SNAKEMAKE) --profile profiles/local --configfile presets/demo.yaml
	@echo "Report: $(CURDIR)/results/report.html"

test: $(VENV)/.installed
	$(PY) -m pytest -q $(XDIST)

test-fast: $(VENV)/.installed
	$(PY) -m pytest -q $(XDIST) tests/unit

# make bench BENCH_DEMO=1: also time the whole demo twice, plain `snakemake --cores N` and with
# --profile profiles/local; BENCH_MALLOC=off: without JOB_ENV;
# BENCH_ARGS: more options of benchmarks/run.py (--tiny, --out DIR)
bench: $(VENV)/.installed
	$(if $(filter off,$(BENCH_MALLOC)),,$(JOB_ENV)) $(PY) -m benchmarks.run $(if $(BENCH_DEMO),--demo) $(BENCH_ARGS)

slurm-plan: $(VENV)/.installed
	$(PY) workflow/slurm_plan.py $(PLAN_ARGS)
