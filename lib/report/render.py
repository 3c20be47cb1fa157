"""Render results/report.html, one self-contained file, from the files the report rule declares.

    python -m lib.report --results results --config-json "$CFG" --inputs-json "$INPUTS" \
        --template workflow/templates/report.html.j2 --repo . --out results/report.html

    from lib.report.render import render
    html = render(cfg, report_inputs(cfg, "results"), "workflow/templates/report.html.j2", "results")

--inputs-json is {name: path or [paths]}, the report rule's named inputs (without it: the
files lib.report.inputs.report_inputs names for this config under --results).

The page is SECTIONS, in order. Each section has a builder, a function of the report
context (lib.report.context) that returns the section's data, or None when its inputs are
not in this run; the template then shows the section's `missing` note instead. A new
section: a module with a build(ctx), its partial workflow/templates/sections/<id>.html.j2,
the files it reads named in lib.report.inputs (the rule declares them), and its entry below.
"""
import argparse
import json
import os
import sys

import jinja2
import markupsafe

from lib.common import write_text_atomic
from lib.report import (augment_samples, detection, evaluation, provenance, published_oe, robustness, summary,
                        training)
from lib.report.cells import LEAK_MARK
from lib.report.citations import missing_cited_files
from lib.report.context import input_file, make_context, read_leaks
from lib.report.inputs import report_inputs


def section(section_id, title, build, template, missing, heading=True):
    """A report section: build(ctx) -> data for `template` (a partial under
    workflow/templates/), or None to show `missing`.

    The partial sees the data as `data` and under the section's id (`robustness` for the
    section "robustness"), besides cfg, leaks and leak_mark. heading=False: the partial
    writes its own <h2 id="..."> heading."""
    return {"id": section_id, "title": title, "build": build, "template": template, "missing": missing,
            "heading": heading}


SECTIONS = [
    section("summary", "Summary: the study's two tables", summary.build, "sections/summary.html.j2",
            "results/tables/accuracy.csv or results/tables/detection.csv is absent: run the aggregate rule."),
    section("published_oe", "Against the Outlier Exposure paper (MNIST)", published_oe.build,
            "sections/published_oe.html.j2",
            "No model of this run matches the Outlier Exposure paper's table (add external_model_sets: [oe_paper] "
            "or train none x baseline/oe/oe_tune on MNIST, e.g. presets/oe-paper.yaml)."),
    section("robustness", "Robustness", robustness.build, "sections/robustness.html.j2",
            "No robustness results in this run (results/tables/robustness_summary.csv is absent).", heading=False),
    section("detection", "OOD detection", detection.build, "sections/detection.html.j2",
            "results/tables/detection.csv is absent: run the aggregate rule."),
    section("evaluation", "Scores, calibration and differences to Base", evaluation.build,
            "sections/evaluation.html.j2", "No calibration results in this run.", heading=False),
    section("training", "Training", training.build, "sections/training.html.j2",
            "No train_log.csv under results/models: no model of this grid has finished training."),
    section("augment_samples", "Augmentation samples", augment_samples.build, "sections/augment_samples.html.j2",
            "No augmentation samples: the grid trains no augmentation besides none, or the "
            "in-distribution set (results/data/<set>.npz) or, for PixMix, its mixing set "
            "(results/data/mixing.npz) is not in this run."),
    section("provenance", "Provenance", provenance.build, "sections/provenance.html.j2",
            "Provenance could not be collected."),
]


def build_sections(ctx, sections=SECTIONS):
    """[{id, title, template, missing, data, ...}] with data None where a section's inputs are absent."""
    return [{**s, "data": s["build"](ctx)} for s in sections]


def render_sections(env, built, common):
    """Each built section's partial, rendered on its own with `common` (cfg, leaks, ...) and its data."""
    for s in built:
        s["html"] = ""
        if s["data"] is not None:
            alias = {} if s["id"] in common or not s["id"].isidentifier() else {s["id"]: s["data"]}
            s["html"] = markupsafe.Markup(env.get_template(s["template"]).render(
                **common, **alias, data=s["data"], section_id=s["id"]))
    return built


def render(cfg, inputs, template_path, results="results", repo=".", sections=SECTIONS):
    """The report's HTML from the files `inputs` names ({name: path or [paths]}, see
    lib.report.inputs); `results` is the run's results folder (paths in the page are shown
    relative to the folder above it)."""
    ctx = make_context(cfg, inputs, results, repo)
    ctx["leaks"] = read_leaks(input_file(ctx, "leaks"), cfg)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(os.path.dirname(os.path.abspath(template_path))),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    common = {"cfg": cfg, "leaks": ctx["leaks"], "leak_mark": LEAK_MARK}
    built = render_sections(env, build_sections(ctx, sections), common)
    return env.get_template(os.path.basename(template_path)).render(**common, sections=built)


def main(argv=None):
    p = argparse.ArgumentParser(description="Render the HTML report.")
    p.add_argument("--results", required=True, help="the run's results folder")
    p.add_argument("--config-json", required=True)
    p.add_argument("--inputs-json", help="{name: path or [paths]}: the files to read (the report rule's "
                                         "inputs); default: lib.report.inputs.report_inputs for this config")
    p.add_argument("--template", required=True)
    p.add_argument("--repo", default=".")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    cfg = json.loads(a.config_json)
    inputs = json.loads(a.inputs_json) if a.inputs_json else report_inputs(cfg, a.results)
    page = render(cfg, inputs, a.template, a.results, a.repo)
    declared = [path for value in inputs.values() for path in (value if isinstance(value, list) else [value])]
    missing = missing_cited_files(page, os.path.dirname(os.path.abspath(a.results)), declared)
    if missing:
        sys.exit(f"error: not writing {a.out}: it would cite {len(missing)} file(s) that are missing:\n  "
                 + "\n  ".join(missing) + "\nRerun the same snakemake command: it rebuilds them, then the report.")
    write_text_atomic(a.out, page)
    print(os.path.abspath(a.out))


if __name__ == "__main__":
    main()
