# Aggregate (pandas, long-format CSVs) and render the one-file HTML report (Jinja2).
# The report reads only the files its rule declares: lib/report/inputs.py names them.

import glob
import os

import lib.report.inputs as lib_report_inputs

lib_aggregate = lazy_module("lib.evaluate.aggregate")  # run: jobs only (common.smk)
lib_groups = lazy_module("lib.evaluate.groups")


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


rule full_spectrum_table:
    input:
        records=expand_models(layout.metrics_file("full_spectrum")),
    output:
        csv=layout.table_file("full_spectrum.csv"),
    log:
        layout.log_file("full_spectrum_table"),
    run:
        lib_aggregate.full_spectrum_table_job(list(input.records), output.csv, log[0])


rule group_means:
    # Near- and far-OOD means beside the per-set tables (lib.evaluate.groups).
    input:
        detection=layout.table_file("detection.csv"),
        full_spectrum=layout.table_file("full_spectrum.csv"),
    output:
        detection=layout.table_file("detection_groups.csv"),
        full_spectrum=layout.table_file("full_spectrum_groups.csv"),
    params:
        groups=OOD_GROUPS,
    log:
        layout.log_file("group_means"),
    run:
        lib_groups.groups_job(input.detection, input.full_spectrum, params.groups, output.detection,
                              output.full_spectrum, log[0])


def report_files(wildcards):
    """Every file the report reads, by name (lib/report/inputs.py): the tables, every model's
    train_log.csv, the first seed's logits (figures), the prepared data sets (checksums,
    sample digits), the mixing set, the corrupted sets (example digit), the download
    records and the benchmark files (wall times)."""
    return lib_report_inputs.report_inputs(config)


def report_inputs_json(wildcards, input):
    """The declared files, by name, as the report's --inputs-json: it reads these and no others."""
    return json.dumps({name: input[name] for name in lib_report_inputs.NAMES}, sort_keys=True)


rule report:
    input:
        unpack(report_files),
        template=f"{ROOT}/workflow/templates/report.html.j2",
        partials=glob.glob(f"{ROOT}/workflow/templates/**/*.j2", recursive=True),
        extensions=EXTENSIONS,  # the report loads them all (lib.report.render): labels, the scores' table
    output:
        html=layout.report_file(),
    params:
        py=PY,
        results=lambda wc, output: os.path.dirname(output.html),  # the results folder (lib.layout.report_file)
        config_json=json.dumps(config, sort_keys=True),
        inputs_json=report_inputs_json,
        root=ROOT,
    log:
        layout.log_file("report"),
    shell:
        "{params.py} -m lib.report --results {params.results:q} --config-json {params.config_json:q} "
        "--inputs-json {params.inputs_json:q} --template {input.template:q} --repo {params.root:q} "
        "--out {output.html:q} > {log:q} 2>&1"


localrules:
    score,
    full_spectrum,
    model_metrics,
    aggregate,
    full_spectrum_table,
    group_means,
    report,
