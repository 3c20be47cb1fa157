"""Accuracy and NLL of one model on the in-distribution test set, from its cached logits.

Runs inside Snakemake's process (a `run:` rule: milliseconds of numpy); a plain function
of paths and values:

    from lib.evaluate.accuracy import accuracy_job, accuracy_record
    accuracy_record("results/logits/none/baseline/seed1/id_test.npz")   # accuracy, nll, n, source
    accuracy_job("results/logits/none/baseline/seed1/id_test.npz",
                 "results/metrics/none/baseline/seed1/accuracy.json", "accuracy.log",
                 augment="none", oe="baseline", seed=1)
"""
from lib.common import job_logger, load_npz, write_json_atomic
from lib.evaluate.metrics import accuracy, nll


def accuracy_record(id_path):
    """Top-1 accuracy and mean NLL of the logits in `id_path` against its labels."""
    out = load_npz(id_path, required=("logits", "labels"))
    return {"accuracy": accuracy(out["logits"], out["labels"]), "nll": nll(out["logits"], out["labels"]),
            "n": int(len(out["labels"])), "source": str(id_path)}


def accuracy_job(id_path, out_json, log_path, *, augment, oe, seed):
    """The per-model rule: accuracy_record plus the model's augment, oe and seed, written as JSON."""
    log = job_logger(log_path)
    record = {"augment": augment, "oe": oe, "seed": int(seed), **accuracy_record(id_path)}
    write_json_atomic(out_json, record)
    log.info("%s", record)
