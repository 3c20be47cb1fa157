"""Extension files through the real workflow (docs/extensions.md): a toy score and a toy
augmentation from a user's file reach the report's tables beside the ten built-in scores,
whose hyperparameters are tuned on a validation OOD set; an edit of the file reruns the
jobs that use what it registers; a clashing or broken file, or a validation set that is
also a test set, stops `snakemake -n` before any job, naming the cause."""
import subprocess

import pytest

from lib.evaluate.scores import SCORE_NAMES
from lib.report.cells import SCORE_LABELS
from tests.helpers.faults import files_under
from tests.helpers.report_page import all_problems, parse_page
from tests.helpers.workflow_runs import job_counts, run_snakemake, snakemake_command, study_config

pytestmark = pytest.mark.slow

TOY = '''"""A toy score and a toy augmentation, as a user would register them."""
import numpy as np

from lib.evaluate.scores import register_score
from lib.train.augment import register_augment


def gap(logits):
    """Minus the gap between the two largest logits."""
    top = np.sort(logits, axis=1)
    return top[:, -2] - top[:, -1]


def invert(x, generator):
    return 1.0 - x


register_score("gap", gap)
register_augment("invert", invert, overlaps=["brightness"])
'''

# The smallest study that shows them: two models (none, invert), one seed, one OOD set, the
# ten built-in scores and the toy one, hyperparameters tuned on a validation OOD set.
STUDY = dict(augment=["none", "invert"], oe=["baseline"], scores=[*SCORE_NAMES, "gap"], ood_sets=["gaussian"],
             validation_ood_sets=["blobs"], synthetic_size=100)


@pytest.fixture(scope="module")
def extension_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("extension-study")
    toy = root / "toy_extension.py"
    toy.write_text(TOY)
    config = study_config(root / "study.yaml", extensions=[str(toy)], **STUDY)
    workdir = root / "run"
    result = run_snakemake(workdir, config, "--cores", "all", profile=None, env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return workdir, config, toy


def test_the_toy_score_and_augmentation_are_in_the_report(extension_run):
    workdir, _, toy = extension_run
    page = parse_page((workdir / "results" / "report.html").read_text())
    for table in ("study-accuracy", "study-auroc", "detection-auroc", "robustness-table"):
        assert page.tables[table].header[1:] == ["Base", "invert"], (table, page.tables[table].header)
    labels = [f"gaussian, {SCORE_LABELS[s]}" for s in SCORE_NAMES] + ["gaussian, gap"]
    assert page.tables["detection-auroc"].labels()[:len(labels)] == labels  # then the group means
    assert all(c.text != "—" for c in page.tables["detection-auroc"].value_cells())
    formulas = {row[0].text: [c.text for c in row[1:]] for row in page.tables["score-formulas"].rows}
    assert formulas["gap"] == ["Minus the gap between the two largest logits.", "logits", f"extension {toy}"]
    assert all_problems(workdir, page) == []  # every number equals the file it names
    # the tunable scores' hyperparameters were tuned on the validation set, never on the test set
    hyper = {row[0].text: row[-1].text for row in page.tables["score-hyperparameters"].rows}
    tunable = [SCORE_LABELS[s] for s in ("odin", "knn", "vim", "react")]
    assert all("tuned on blobs" in hyper[label] for label in tunable), hyper
    assert not any("gaussian" in source for source in hyper.values()), hyper
    # The toy augmentation declared its overlap with MNIST-C's brightness: that cell is marked.
    rows = {row[0].text: [c.text for c in row[1:]] for row in page.tables["robustness-table"].rows}
    assert rows["brightness"][1].endswith("‡") and not rows["brightness"][0].endswith("‡"), rows["brightness"]
    assert not any(texts[1].endswith("‡") for name, texts in rows.items() if name != "brightness")


def test_an_edited_extension_reruns_the_jobs_that_use_it(extension_run):
    workdir, config, toy = extension_run
    original = toy.read_text()
    try:
        toy.write_text(original + "# edited\n")
        plan = run_snakemake(workdir, config, "-n", profile=None)
    finally:
        toy.write_text(original)  # same bytes: Snakemake's checksum sees no change
    assert plan.returncode == 0, plan.stdout[-3000:] + plan.stderr[-3000:]
    counts = job_counts(plan.stdout)
    # the invert model (not the Base one), and the gap score of each model
    assert counts["train"] == 1 and counts["evaluate"] == 1, counts
    # gap of both models, the ten built-in scores of the re-evaluated invert model
    assert counts["score"] == 2 + len(SCORE_NAMES) and counts["report"] == 1, counts
    assert "prepare_dataset" not in counts


CLASH = "from lib.evaluate.scores import register_score\n\nregister_score('msp', lambda z: -z.max(axis=1))\n"
BROKEN = "import numpy as np\n\ndef gap(logits:\n    return logits\n"


def test_a_clashing_or_broken_file_or_a_test_set_for_validation_stops_the_plan_before_any_job(tmp_path):
    started = {}
    for case, text in (("clash", CLASH), ("broken", BROKEN), ("overlap", TOY)):
        ext = tmp_path / f"{case}.py"
        ext.write_text(text)
        study = {**STUDY, "validation_ood_sets": ["gaussian"]} if case == "overlap" else STUDY
        config = study_config(tmp_path / f"{case}.yaml", extensions=[str(ext)], **study)
        cmd = snakemake_command(tmp_path / case, config, "-n", profile=None)
        started[case] = (ext, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for case, (ext, proc) in started.items():
        output = proc.communicate(timeout=300)[0]
        assert proc.returncode != 0, output
        expected = {"clash": f"extension {ext}, line 3: score 'msp' clashes with the built-in score",
                    "broken": f"extension {ext}: syntax error at line 3",
                    "overlap": "config key 'validation_ood_sets': gaussian also in 'ood_sets'"}[case]
        assert expected in output, output
        assert "Job stats" not in output and "rule " not in output
        assert files_under(tmp_path / case / "results") == []
