# Robustness on MNIST-C: the 15 corrupted test sets (the official zip, or generated from the
# in-distribution test set), accuracy per corruption per model, and the robustness tables.
# The evaluate rule (evaluate.smk) writes the logits results/logits/.../mnistc_<corruption>.npz.

lib_robustness_tables = lazy_module("lib.evaluate.robustness_tables")  # run: jobs only (common.smk)


def mnist_c_sources_json():
    # Only the mnist_c entry: editing another set's source must not refetch MNIST-C.
    sources = config.get("data_sources") or {}
    return json.dumps({"mnist_c": sources["mnist_c"]} if "mnist_c" in sources else {}, sort_keys=True)


# On failure, print the error from the log on the console: it names the file, the md5 and
# how to stage the zip by hand (the log's last lines when there is no "error:" line).
SHOW_ERROR = "|| {{ sed -n '/^error: /,$p' {log:q} | grep . >&2 || tail -n 20 {log:q} >&2; exit 1; }}"


if config["corruptions"] == "official":

    rule fetch_mnist_c:
        # Login node: the only step that touches the network. The zip stays in data_dir
        # (not an output: a failed run must not delete a 235 MiB download).
        output:
            record=layout.fetched_record("mnist_c"),
        params:
            py=PY,
            data_dir=config["data_dir"],
            sources=mnist_c_sources_json(),
            offline="--offline" if config.get("offline") else "",
        log:
            layout.log_file("data/fetch_mnist_c"),
        shell:
            "{params.py} -m lib.data.mnist_c fetch --data-dir {params.data_dir:q} --sources-json {params.sources:q} "
            "{params.offline} --record {output.record:q} > {log:q} 2>&1 " + SHOW_ERROR

    rule extract_mnist_c:
        input:
            record=layout.fetched_record("mnist_c"),
        output:
            npz=[layout.corruption_file(c) for c in CORRUPTIONS],
        params:
            py=PY,
            data_dir=config["data_dir"],
            sources=mnist_c_sources_json(),
            out_dir=layout.corruption_dir(),
        log:
            layout.log_file("data/extract_mnist_c"),
        shell:
            "{params.py} -m lib.data.mnist_c extract --data-dir {params.data_dir:q} --sources-json {params.sources:q} "
            "--out-dir {params.out_dir:q} > {log:q} 2>&1 " + SHOW_ERROR

    localrules:
        fetch_mnist_c,
        extract_mnist_c,

else:

    rule generate_corruptions:
        # Deterministic per (seed, corruption): lib.data.corruptions seeds each one from both.
        input:
            id_data=layout.data_file(ID),
        output:
            npz=[layout.corruption_file(c) for c in CORRUPTIONS],
        params:
            py=PY,
            seed=config["seed"],
            out_dir=layout.corruption_dir(),
        log:
            layout.log_file("data/generate_corruptions"),
        benchmark:
            layout.benchmark_file("data/generate_corruptions")
        shell:
            "{params.py} -m lib.data.corruptions --in {input.id_data:q} --seed {params.seed} "
            "--out-dir {params.out_dir:q} > {log:q} 2>&1"


rule shifted_test_set:
    # Full-spectrum detection's covariate-shifted ID set: each test image once, under one
    # corruption, every corruption equally often (lib.data.shifted).
    input:
        corrupted=[layout.corruption_file(c) for c in CORRUPTIONS],
    output:
        npz=layout.shifted_file(),
    params:
        py=PY,
        seed=config["seed"],
        corruption_dir=lambda wc, input: os.path.dirname(input.corrupted[0]),
    log:
        layout.log_file("data/shifted_test_set"),
    shell:
        "{params.py} -m lib.data.shifted --corruptions-dir {params.corruption_dir:q} --seed {params.seed} "
        "--out {output.npz:q} > {log:q} 2>&1"


rule robustness_metrics:
    input:
        logits=[layout.logits_file(name) for name in MNISTC_SETS],
    output:
        json=layout.metrics_file("robustness"),
    log:
        layout.log_file("metrics/{augment}/{oe}/seed{seed}/robustness"),
    run:
        # In-process: 15 argmaxes over cached logits, milliseconds.
        lib_robustness_tables.robustness_job(dict(zip(CORRUPTIONS, input.logits)), output.json, log[0],
                                             **model_values(wildcards))


rule aggregate_robustness:
    input:
        records=expand_models(layout.metrics_file("robustness")),
    output:
        long=layout.table_file("robustness.csv"),
        summary=layout.table_file("robustness_summary.csv"),
    log:
        layout.log_file("aggregate_robustness"),
    run:
        lib_robustness_tables.robustness_tables_job(list(input.records), output.long, output.summary, log[0])


localrules:
    shifted_test_set,
    robustness_metrics,
    aggregate_robustness,
