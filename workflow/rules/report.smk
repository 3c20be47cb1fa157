# Aggregate (pandas, long-format CSVs) and render the one-file HTML report (Jinja2).
# The report also reads, undeclared, whatever optional tables and benchmark files exist
# when it runs (results/tables/*.csv, results/benchmarks/**.tsv).

import glob
import os

import lib.evaluate.aggregate as lib_aggregate


rule aggregate:
    input:
        scores=[layout.score_file(o, s, **m) for m in models() for o in OOD_SETS for s in SCORES],
        accuracy=expand_models(layout.metrics_file("accuracy")),
    output:
        detection=layout.table_file("detection.csv"),
        accuracy=layout.table_file("accuracy.csv"),
    log:
        layout.log_file("aggregate"),
    run:
        lib_aggregate.aggregate_job(list(input.scores), list(input.accuracy), output.detection, output.accuracy, log[0])


rule report:
    input:
        detection=layout.table_file("detection.csv"),
        accuracy=layout.table_file("accuracy.csv"),
        leaks=layout.table_file("leaks.json"),
        train_logs=expand_models(layout.train_log_file()),
        # The figures are drawn from the cached logits; the checksums hash the prepared data.
        logits=[p for name in ("id_test", *OOD_SETS) for p in expand_models(layout.logits_file(name))],
        data=[layout.data_file(name) for name in dict.fromkeys([ID, *OOD_SETS])],
        template=f"{ROOT}/workflow/templates/report.html.j2",
        partials=glob.glob(f"{ROOT}/workflow/templates/**/*.j2", recursive=True),
        robustness=layout.table_file("robustness.csv"),
        robustness_summary=layout.table_file("robustness_summary.csv"),
        corrupted=[layout.corruption_file(c) for c in CORRUPTIONS],  # the example digit under each corruption
        calibration=layout.table_file("calibration.csv"),
        reliability=layout.table_file("reliability.csv"),
        differences=layout.table_file("differences.csv"),
        mixing=mixing_inputs(),  # the samples figure reads the mixing set when pixmix trains
    output:
        html=layout.report_file(),
    params:
        py=PY,
        results=lambda wc, output: os.path.dirname(output.html),  # the results folder (lib.layout.report_file)
        config_json=json.dumps(config, sort_keys=True),
        root=ROOT,
    log:
        layout.log_file("report"),
    shell:
        "{params.py} -m lib.report --results {params.results:q} "
        "--config-json {params.config_json:q} --template {input.template:q} --repo {params.root:q} "
        "--out {output.html:q} > {log:q} 2>&1"


localrules:
    score,
    model_metrics,
    aggregate,
    report,
