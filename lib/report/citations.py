"""The files a rendered report cites, followed down the chain it documents, and which are gone.

    from lib.report.citations import missing_cited_files
    missing_cited_files(html, workdir, readable)  # [] or ["results/scores/.../msp.json (cited by results/tables/...)"]

A cell's `data-source` names a file (a table, a train log, a data set); a table's `source`
column names the JSON records its rows came from, and a record's `source` the cached
arrays it was computed from (several are joined by ';'). A page whose chain ends at a
missing file shows numbers nobody can check any more: the report job refuses to write it.
Only the files in `readable` (the report rule's declared inputs) are opened to follow the
chain further; every other cited file is checked for existence only, so the report reads
nothing its rule does not declare. (A deleted file deeper down is rebuilt anyway: `rule
all` asks for every file of the study.)
"""
import html
import json
import os
import re

import pandas as pd

DATA_SOURCE = re.compile(r'data-source="([^"]*)"')


def _sources_inside(path):
    """The files a table's `source` column or a JSON record's `source` field names."""
    if path.endswith(".csv"):
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        values = table["source"].unique() if "source" in table else []
    elif path.endswith(".json"):
        with open(path) as f:
            record = json.load(f)
        values = [record.get("source", "")] if isinstance(record, dict) else []
    else:
        return []
    return [part for value in values for part in str(value).split(";") if part]


def missing_cited_files(page, workdir, readable=()):
    """Every file `page` cites, directly or through the readable files it cites, that does not
    exist (paths relative to `workdir`, the folder that holds results/)."""
    readable = {os.path.normpath(os.path.join(workdir, path)) for path in readable}
    queue = [(html.unescape(path), None) for path in dict.fromkeys(DATA_SOURCE.findall(page)) if path]
    seen, missing = set(), []
    while queue:
        path, cited_by = queue.pop(0)
        if path in seen:
            continue
        seen.add(path)
        full = os.path.join(workdir, path)
        if not os.path.exists(full):
            missing.append(path + (f" (cited by {cited_by})" if cited_by else ""))
        elif os.path.normpath(full) in readable:
            queue += [(inner, path) for inner in _sources_inside(full)]
    return missing
