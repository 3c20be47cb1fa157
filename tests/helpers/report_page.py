"""The report's HTML read back strictly into tables, every number traced to its file, and
renders of copies of a run (the run: `tiny_study` of tests/workflow/conftest.py).

    copy = copy_run(tiny_study, tmp_path)         # results/ without checkpoints and weights
    html = render_run(copy, tiny_config())        # lib.report.render.render on the copy
    page = parse_page(html)                       # raises on unbalanced tags
    page.tables["study-accuracy"].labels()        # each body row's first cell, as text
    problems = [check_cell(copy, c) for t in page.tables.values() for c in t.number_cells()]
"""
import copy
import functools
import math
import os
import re
import shutil
from html.parser import HTMLParser

import numpy as np
import pandas as pd

from lib.report import published
from lib.report.cells import parse_key
from lib.report.context import read_long_table
from lib.report.inputs import report_inputs
from lib.report.render import SECTIONS, render
from lib.evaluate.aggregate import summarize
from tests.helpers import ROOT
from tests.helpers.workflow_runs import resolved_config

TEMPLATE = os.path.join(ROOT, "workflow", "templates", "report.html.j2")
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


def tiny_config():
    """The config the workflow resolves for presets/tiny.yaml: config.yaml, updated by the preset."""
    return resolved_config("config.yaml", "presets/tiny.yaml")


def copy_run(workdir, dest):
    """Copy results/ of a run into dest (a new working directory), without weights; files keep their mtimes."""
    shutil.copytree(os.path.join(workdir, "results"), os.path.join(dest, "results"),
                    ignore=shutil.ignore_patterns("checkpoints", "*.pt", "logs"))
    return dest


def render_run(workdir, cfg, sections=SECTIONS):
    """The report of the run in `workdir`, from the files the report rule would declare for `cfg`."""
    results = os.path.join(workdir, "results")
    return render(cfg, report_inputs(cfg, results), TEMPLATE, results, repo=ROOT, sections=sections)


# ---- reading the HTML back ----------------------------------------------------------------


class Cell:
    def __init__(self, tag, attrs):
        self.tag, self.attrs = tag, dict(attrs)
        self.text, self.published = "", ""


class Table:
    def __init__(self, attrs):
        self.id = dict(attrs).get("id", "")
        self.header, self.rows = [], []

    def number_cells(self):
        return [c for row in self.rows for c in row if "data-value" in c.attrs]

    def per_set_cells(self):
        """number_cells() of the rows of single OOD sets, without the near/far group-mean rows."""
        return [c for row in self.rows if "-OOD mean" not in row[0].text for c in row if "data-value" in c.attrs]

    def body_cells(self):
        """The <td> cells of the body rows (row labels are <th scope="row">, or a plug-in's first <td>)."""
        return [c for row in self.rows for c in row if c.tag == "td"]

    def labels(self):
        """The text of each body row's first cell: its label."""
        return [row[0].text for row in self.rows]

    def value_cells(self):
        """Every body cell but the row labels, row by row."""
        return [c for row in self.rows for c in row[1:]]


class PageParser(HTMLParser):
    """Tables (header texts, rows of cells with attributes and text), every URL-valued
    attribute, the style and script text, and the section elements; raises ValueError
    on a closing tag that does not match the open one."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.tables, self.urls, self.styles, self.scripts = [], {}, [], [], []
        self.sections, self._table, self._row, self._cell, self._in_pub, self._in_head = [], None, None, None, 0, False
        self._text_target = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for name in ("src", "href", "srcset", "data", "poster", "action", "formaction", "background"):
            if name in a:
                self.urls.append((tag, name, a[name] or ""))
        if tag not in VOID:
            self.stack.append(tag)
        if tag == "table":
            self._table = Table(attrs)
            self.tables[self._table.id] = self._table
        elif tag == "thead":
            self._in_head = True
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = Cell(tag, attrs)
        elif tag == "span" and self._cell is not None and "pub" in a.get("class", "").split():
            self._in_pub += 1
        elif tag == "span" and self._in_pub:
            self._in_pub += 1
        elif tag in ("style", "script"):
            self._text_target = self.styles if tag == "style" else self.scripts
            self._text_target.append("")
        elif tag == "section":
            self.sections.append(a.get("data-section", ""))

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            raise ValueError(f"</{tag}> closes <{self.stack[-1] if self.stack else 'nothing'}> "
                             f"at line {self.getpos()[0]}")
        self.stack.pop()
        if tag == "span" and self._in_pub:
            self._in_pub -= 1
        elif tag in ("td", "th") and self._cell is not None:
            self._cell.text, self._cell.published = self._cell.text.strip(), self._cell.published.strip()
            self._row.append(self._cell)
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self._in_head:
                self._table.header = [c.text for c in self._row]
            else:
                self._table.rows.append(self._row)
            self._row = None
        elif tag == "thead":
            self._in_head = False
        elif tag == "table":
            self._table = None
        elif tag in ("style", "script"):
            self._text_target = None

    def handle_data(self, data):
        if self._text_target is not None:
            self._text_target[-1] += data
        if self._cell is not None:
            if self._in_pub:
                self._cell.published += data
            else:
                self._cell.text += data


def parse_page(html):
    parser = PageParser()
    parser.feed(html)
    parser.close()
    if parser.stack:
        raise ValueError(f"unclosed tags at the end of the page: {parser.stack}")
    return parser


# ---- tracing a number back to its file --------------------------------------------------

SHOWN = re.compile(r"^(-?\d+(?:\.\d+)?)(?: ± (\d+(?:\.\d+)?))?(?: \(n=(\d+)\))?$")


def _decimals(text):
    return len(text.split(".")[1]) if "." in text else 0


def _close(shown_text, value):
    """The shown number is `value` rounded to the digits shown."""
    return abs(float(shown_text) - value) <= 0.5 * 10 ** -_decimals(shown_text) + 1e-9


# A page has a thousand cells and a few files: each file is read once per version of it
# (path, mtime, size), not once per cell; tests that rewrite a file get the new version.
def _version(path):
    stat = os.stat(path)
    return path, stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=128)
def _summary(version):
    return summarize(read_long_table(version[0]))


@functools.lru_cache(maxsize=128)
def _text_table(version):
    return pd.read_csv(version[0], keep_default_na=False, dtype=str)


def _only_row(table, key):
    """The one row of table where every column of key has its value, or None."""
    match = np.ones(len(table), dtype=bool)
    for k, v in key.items():
        match &= (table[k] == v).to_numpy(dtype=bool)
    hits = np.flatnonzero(match)
    return table.iloc[hits[0]] if hits.size == 1 else None, hits.size


def _expected_long(path, key):
    return _only_row(_summary(_version(path)), key)[0]


def _expected_plain(path, key):
    """The number a data-key names in a train log, a benchmark folder or a file's size."""
    if key.get("stat") == "bytes":
        return float(os.path.getsize(path))
    if os.path.isdir(path):
        per_job = []
        for folder, _, files in os.walk(path):
            for name in files:
                if name.endswith(".tsv"):
                    bench = pd.read_csv(os.path.join(folder, name), sep="\t")
                    per_job.append({"s": bench["s"].mean(), "cpu_time": bench["cpu_time"].mean()})
        jobs = pd.DataFrame(per_job)
        if key.get("stat") == "jobs":
            return float(len(jobs))
        return float(getattr(jobs[key["column"]], key["stat"])())
    log = pd.read_csv(path)
    if "row" in key:
        return float(log[key["column"]].iloc[int(key["row"])])
    return float(getattr(log[key["column"]], key["stat"])())


def check_cell(workdir, cell):
    """None when the cell's data-value and shown text match the file it names; else why not."""
    a = cell.attrs
    where = f"cell {a.get('data-key')!r} of {a.get('data-source')!r} showing {cell.text!r}"
    if a["data-value"] == "":
        return None if cell.text == "—" else f"{where}: no data-value but a number is shown"
    source = os.path.join(workdir, a.get("data-source", ""))
    if not a.get("data-source") or not os.path.exists(source):
        return f"{where}: data-source does not exist"
    if not a.get("data-key") or "data-scale" not in a:
        # Cells of the evaluation and robustness tables carry a data-key that names their row
        # but no data-scale: they are checked against their file as before, by value.
        return _check_keyless(where, source, cell)
    in_tables = source.endswith(".csv") and os.path.dirname(source).endswith(os.path.join("results", "tables"))
    if in_tables and "column" in parse_key(a["data-key"]):  # a table with one row per comparison
        return _check_row(where, source, cell)
    value, scale = float(a["data-value"]), float(a["data-scale"])
    key = parse_key(a["data-key"])
    shown = SHOWN.match(cell.text)
    if not shown:
        return f"{where}: shown text is not a number"
    if source.endswith(".csv") and os.path.dirname(source).endswith(os.path.join("results", "tables")):
        row = _expected_long(source, key)
        if row is None:
            return f"{where}: the key matches no single summarised row"
        if value != float(row["mean"]):
            return f"{where}: data-value {value!r} != mean {row['mean']!r}"
        if not _close(shown.group(1), row["mean"] * scale):
            return f"{where}: shown mean != {row['mean'] * scale}"
        if shown.group(3) is None or int(shown.group(3)) != row["n"] or int(a["data-n"]) != row["n"]:
            return f"{where}: n != {row['n']}"
        if row["n"] > 1 and (shown.group(2) is None or not _close(shown.group(2), row["std"] * scale)):
            return f"{where}: shown std != {row['std'] * scale}"
        if row["n"] == 1 and shown.group(2) is not None:
            return f"{where}: a std is shown for one seed"
        return _check_published(where, cell, value, key, scale)
    expected = _expected_plain(source, key)
    if not math.isclose(value, expected, rel_tol=1e-12, abs_tol=1e-12):
        return f"{where}: data-value {value!r} != {expected!r} in the file"
    if not _close(shown.group(1), expected * scale):
        return f"{where}: shown text != {expected * scale}"
    return None


def _check_row(where, source, cell):
    """A cell of a table with one row per comparison (differences.csv): its data-key names the
    row (every key but `column`) and the column(s); the shown numbers are those values x
    data-scale, to the digits shown ('< 0.001' shows a value below 0.001)."""
    key = parse_key(cell.attrs["data-key"])
    columns = key.pop("column").split(",")
    row, count = _only_row(_text_table(_version(source)), key)
    if row is None:
        return f"{where}: the key matches {count} rows, not one"
    values = [float(v) for v in cell.attrs["data-value"].split(",")]
    expected = [float(row[c]) for c in columns]
    if not all(math.isclose(v, e, rel_tol=1e-12, abs_tol=1e-15) for v, e in zip(values, expected)):
        return f"{where}: data-value {values} != {expected} in the file"
    scale = float(cell.attrs["data-scale"])
    if cell.text.startswith("<"):
        bound = float(cell.text.lstrip("< "))
        return None if len(values) == 1 and values[0] * scale < bound else f"{where}: {values} is not below {bound}"
    shown = re.findall(r"[-+]?\d+(?:\.\d+)?", cell.text)
    if len(shown) != len(values) or not all(_close(t.lstrip("+"), v * scale) for t, v in zip(shown, values)):
        return f"{where}: shown {shown} != {[v * scale for v in values]}"
    return None


def _file_numbers(path):
    """Every number a CSV holds, and for a long table also its summarised means and stds."""
    return _numbers(_version(path))


@functools.lru_cache(maxsize=128)
def _numbers(version):
    path = version[0]
    table = pd.read_csv(path, keep_default_na=False)
    numbers = [pd.to_numeric(table[c], errors="coerce") for c in table.columns]
    if {"augment", "oe", "metric", "value"} <= set(table.columns):
        summary = summarize(read_long_table(path))
        numbers += [summary["mean"], summary["std"]]
    values = pd.concat(numbers).dropna().astype(float)
    return frozenset(values.tolist())


def _check_keyless(where, source, cell):
    """A cell that names its file but not the row (a plug-in section's own cell): each of its
    data-values (comma-separated for an interval) must be a number of that file, or a mean
    of its long table, and be shown, as a fraction or a percentage, to the digits shown."""
    values = [float(v) for v in cell.attrs["data-value"].split(",")]
    shown = re.findall(r"[-+]?\d+(?:\.\d+)?", cell.text)
    if not shown:
        return f"{where}: no number shown"
    if source.endswith(".csv"):
        numbers = _file_numbers(source)
        missing = [v for v in values if not any(math.isclose(v, x, rel_tol=1e-12, abs_tol=1e-15) for x in numbers)]
        if missing:
            return f"{where}: data-value {missing} is not a number of the file"
    for value in values:
        if not any(_close(text, value * scale) for text in shown for scale in (1, 100)):
            return f"{where}: {value!r} is not what the cell shows (as a fraction or a percentage)"
    return None


def _check_published(where, cell, value, key, scale):
    if not cell.published:
        return None
    match = re.match(r"^published (\d+\.\d+)(?: Δ ([+-]\d+\.\d+))?$", cell.published)
    if not match:
        return f"{where}: published part {cell.published!r} unreadable"
    if key.get("metric") == "auroc":
        expected = published.AUROC[(key["set"], key["score"], key["augment"], key["oe"])]
    elif key.get("metric") == "accuracy":
        expected = published.ACCURACY[("mnist", key["augment"])]
    else:
        expected = published.ACCURACY[("mnist_c", key["augment"])]
    if not _close(match.group(1), expected * scale):
        return f"{where}: published {match.group(1)} != {expected * scale}"
    if match.group(2) is None or not _close(match.group(2), (value - expected) * scale):
        return f"{where}: delta {match.group(2)} != {(value - expected) * scale}"
    return None


def all_problems(workdir, page):
    return [p for t in page.tables.values() for c in t.number_cells() if (p := check_cell(workdir, c))]


def with_config(cfg, **changes):
    out = copy.deepcopy(cfg)
    out.update(changes)
    return out
