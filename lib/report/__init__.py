"""The HTML report: one page of sections, each number traceable to the file it came from.

    python -m lib.report --results results --config-json "$CFG" --inputs-json "$INPUTS" \
        --template workflow/templates/report.html.j2 --out results/report.html

The modules, in the order a reading takes them:
    render.py       the page: the SECTIONS list, render(), the command line
    inputs.py       every file the report reads, by name (the report rule declares them)
    context.py      the declared files as the section builders read them (tables, leaks, paths)
    cells.py        labels of models and sets, number formatting, traceable cells
    summary.py      the summary section: the study's two tables and their reading
    verdicts.py     which differences between models are real (as differences.csv decided)
    robustness.py   the MNIST-C section         detection.py   the OOD detection section
    evaluation.py   scores, calibration, differences to Base, ranks
    statistics.py   the method paragraph, detectable-difference lines, critical-difference diagrams
    training.py     the training section        augment_samples.py   augmentation samples
    provenance.py   code, packages, devices, wall times, data checksums
    figures.py      ROC curves, score histograms, training curves (PNG data URIs)
    published.py    the study's published numbers, shown beside ours

The last stage of the data flow: it may import every other package.
"""
