# Aggregate (pandas, long-format CSVs) and render the one-file HTML report (Jinja2).


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
        template=f"{ROOT}/workflow/templates/report.html.j2",
        robustness="results/tables/robustness.csv",
        robustness_summary="results/tables/robustness_summary.csv",
        robustness_template=f"{ROOT}/workflow/templates/robustness.html.j2",
        corrupted=[corruption_file(c) for c in CORRUPTIONS],
        id_data=data_file(ID),
        calibration="results/tables/calibration.csv",
        reliability="results/tables/reliability.csv",
        differences="results/tables/differences.csv",
        evaluation_template=f"{ROOT}/workflow/templates/evaluation_section.html.j2",
        mixing=mixing_inputs(),  # the samples figure reads results/data/mixing.npz when pixmix trains
        augment_template=f"{ROOT}/workflow/templates/augment_samples.html.j2",
    output:
        html="results/report.html",
    params:
        py=PY,
        config_json=json.dumps(config, sort_keys=True),
        root=ROOT,
    log:
        "results/logs/report.log",
    shell:
        "{params.py} -m lib.report --tables results/tables --models-dir results/models "
        "--config-json {params.config_json:q} --template {input.template:q} --repo {params.root:q} "
        "--out {output.html:q} --corruptions-dir results/data/corruptions --id-data {input.id_data:q} > {log:q} 2>&1"


localrules:
    score,
    model_metrics,
    aggregate,
    report,
