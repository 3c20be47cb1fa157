"""What the tests of every tier share, one module per subject:

    from tests.helpers import ROOT                        # the repository's root folder
    tests.helpers.workflow_runs    run_snakemake, snakemake_command, job_counts, study_config,
                                   resolved_config, python_env
    tests.helpers.fake_data        small files in the real data sets' formats, and serve()
    tests.helpers.faults           bad configs, read-only folders, a NaN loss, exact run comparisons
    tests.helpers.report_page      the report's HTML read back into tables; every number traced
    tests.helpers.report_reads     the files a render of the report reads (audit hooks)
    tests.helpers.shared_fixtures  the real MNIST sample and OE checkpoints beside the checkout
    tests.helpers.chromium         Debian's headless chromium over the DevTools pipe
    tests.helpers.slurm            the workflow's rules and local rules; the test profile
    tests.helpers.once             work done once per test run, whatever the number of xdist workers

Fixtures live in conftest.py files: tests/conftest.py (`http_server`) and
tests/workflow/conftest.py (`tiny_study`, one run of presets/tiny.yaml per test run).
"""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
