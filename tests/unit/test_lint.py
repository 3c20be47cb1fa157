"""`snakemake --lint` on the real Snakefile: every finding is one that docs/testing.md ("Lint") explains.

    .venv/bin/python -m pytest tests/unit/test_lint.py -q

A finding of a kind not listed below fails the test: fix it, or, if it does not
matter, add it here and to the Lint list in docs/testing.md with the reason.
"""
import re
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT

REPO = Path(ROOT)

# (pattern of the finding's title, pattern of where it is: a rule name or a file) -> why it stays.
ACCEPTED = [
    (r"Mixed rules and functions in same snakefile\.", r".*"),        # helpers sit beside the one rule they serve
    (r"Path composition with '\+' in line \d+", r".*"),               # command-line strings joined with +, not paths
    (r"Specify a conda environment or container for each rule\.", r".*"),  # one venv for every job (requirements.txt)
    (r"Param (root|out_dir) is a prefix of input or output file but hardcoded", r"report|extract_mnist_c"),
    # Deliberately not params: moving data_dir or going offline must not rerun the study.
    (r"Shell command directly uses variable (DATA_DIR|OFFLINE_ARG|DATA_SOURCES_ARG) from outside of the rule",
     r"fetch_real_dataset|prepare_real_dataset"),
    # Deliberately not a param: listing one more extension file must not rerun every job;
    # the files a job uses are its inputs instead (docs/extensions.md).
    (r"Shell command directly uses variable EXTENSION_ARGS from outside of the rule",
     r"train|evaluate|prepare_dataset"),
    (r'Absolute path "/\^error: /,\$p" in line \d+', r".*robustness\.smk"),  # a sed address, not a path
    (r"No log directive defined", r"leak_marks"),                     # writes a JSON from the config only
]


def lint_findings(output: str) -> list:
    """[(where, title)] from snakemake --lint's text: where is a rule name or a file path."""
    findings, where = [], None
    for line in output.splitlines():
        header = re.match(r"Lints for (?:snakefile (\S+)|rule (\w+) \(line \d+, \S+\)):$", line)
        if header:
            where = header.group(1) or header.group(2)
            continue
        item = re.match(r"    \* (.*):$", line)
        if item:
            findings.append((where, item.group(1)))
    return findings


def unexplained(findings: list) -> list:
    return [(where, title) for where, title in findings
            if not any(re.fullmatch(t, title) and re.fullmatch(w, where) for t, w in ACCEPTED)]


def test_parser_reads_rule_and_snakefile_findings():
    text = (
        "Lints for snakefile /x/workflow/rules/train.smk:\n"
        "    * Mixed rules and functions in same snakefile.:\n"
        "      Small one-liner functions ...\n\n"
        "Lints for rule leak_marks (line 64, /x/workflow/rules/data.smk):\n"
        "    * No log directive defined:\n"
        "    * Specify a conda environment or container for each rule.:\n"
    )
    assert lint_findings(text) == [
        ("/x/workflow/rules/train.smk", "Mixed rules and functions in same snakefile."),
        ("leak_marks", "No log directive defined"),
        ("leak_marks", "Specify a conda environment or container for each rule."),
    ]
    assert unexplained(lint_findings(text)) == []
    assert unexplained([("train", "No log directive defined")]) == [("train", "No log directive defined")]


def test_lint_of_the_real_workflow_has_only_explained_findings(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "-d", str(tmp_path), "--lint"],
        capture_output=True, text=True, timeout=300,
    )
    output = result.stdout + result.stderr
    findings = lint_findings(output)
    # Exit status 1 means "there are findings"; anything else is a crash of the lint itself.
    assert result.returncode in (0, 1) and (findings or result.returncode == 0), output[-3000:]
    assert unexplained(findings) == [], output[-6000:]
