# Aggregate (pandas, long-format CSVs) and render the one-file HTML report (Jinja2).
# The report also reads, undeclared, whatever optional tables and benchmark files exist
# when it runs (results/tables/*.csv, results/benchmarks/**.tsv).

import glob


rule aggregate:
    input:
        scores=lambda wc: [
            f"results/scores/{m['augment']}/{m['oe']}/seed{m['seed']}/{o}/{s}.json"
            for m in models() for o in OOD_SETS for s in SCORES
        ],
        accuracy=expand_models("results/metrics/{augment}/{oe}/seed{seed}/accuracy.json"),
    output:
        detection="results/tables/detection.csv",
        accuracy="results/tables/accuracy.csv",
    params:
        py=PY,
    log:
        "results/logs/aggregate.log",
    run:
        lib_aggregate.aggregate_job(input, output, log[0])


rule report:
    input:
        detection="results/tables/detection.csv",
        accuracy="results/tables/accuracy.csv",
        leaks="results/tables/leaks.json",
        train_logs=expand_models(f"{MODEL_DIR}/train_log.csv"),
        # The figures are drawn from the cached logits; the checksums hash the prepared data.
        logits=[p for name in ("id_test", *OOD_SETS) for p in expand_models(f"{LOGIT_DIR}/{name}.npz")],
        data=[data_file(name) for name in dict.fromkeys([ID, *OOD_SETS])],
        template=f"{ROOT}/workflow/templates/report.html.j2",
        partials=glob.glob(f"{ROOT}/workflow/templates/**/*.j2", recursive=True),
        robustness="results/tables/robustness.csv",
        robustness_summary="results/tables/robustness_summary.csv",
        corrupted=[corruption_file(c) for c in CORRUPTIONS],  # the example digit under each corruption
        calibration="results/tables/calibration.csv",
        reliability="results/tables/reliability.csv",
        differences="results/tables/differences.csv",
        detectable="results/tables/detectable.csv",
        ranks="results/tables/ranks.csv",
        mixing=mixing_inputs(),  # the samples figure reads results/data/mixing.npz when pixmix trains
    output:
        html="results/report.html",
    params:
        py=PY,
        config_json=json.dumps(config, sort_keys=True),
        root=ROOT,
    log:
        "results/logs/report.log",
    shell:
        "{params.py} -m lib.report --results results "
        "--config-json {params.config_json:q} --template {input.template:q} --repo {params.root:q} "
        "--out {output.html:q} > {log:q} 2>&1"


localrules:
    score,
    model_metrics,
    aggregate,
    report,
