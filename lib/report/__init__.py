"""The HTML report: sections, cells, summary, figures, provenance, published numbers.

    python -m lib.report --results results --config-json "$CFG" --template T --out report.html

The last stage of the data flow: it may import every other package.
"""
