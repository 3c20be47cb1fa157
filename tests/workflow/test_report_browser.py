"""The report in a real browser: Debian's chromium, headless, driven over the DevTools protocol.

It loads without console errors or network requests, every figure decodes, a click on a
column header sorts that table, and the page reads the same with JavaScript off. A
full-page screenshot is saved as a test artefact (its path is among the run's notes at the
end of its output; the folder is $TEST_ARTIFACTS_DIR, else <tmp>/mnist-safety-test-artifacts).
"""
import json
import os
import tempfile
import warnings

import pytest

from tests.helpers.chromium import Chromium, find_or_install_chromium

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def chromium_path():
    path, why_not = find_or_install_chromium()
    if path is None:
        message = f"BROWSER TESTS SKIPPED: {why_not}. Install Debian's chromium (apt-get install -y chromium)."
        warnings.warn(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def report_url(tiny_study):
    return (tiny_study / "results" / "report.html").as_uri()


@pytest.fixture(scope="module")
def browser(chromium_path, tmp_path_factory):
    with Chromium(chromium_path, tmp_path_factory.mktemp("chromium-profile")) as b:
        yield b


@pytest.fixture(scope="module")
def loaded_page(browser, report_url):
    page = browser.new_page()
    page.load(report_url)
    return page


def artifacts_dir():
    folder = os.environ.get("TEST_ARTIFACTS_DIR") or os.path.join(tempfile.gettempdir(), "mnist-safety-test-artifacts")
    os.makedirs(folder, exist_ok=True)
    return folder


def column_values(page, table_id, column):
    return page.evaluate(f"""Array.from(document.querySelectorAll('#{table_id} tbody tr')).map(function (tr) {{
        var c = tr.cells[{column}]; var v = c.getAttribute('data-value');
        return v === null || v === '' ? c.textContent.trim() : parseFloat(v); }})""")


def click_header(page, table_id, column):
    x, y = page.evaluate(f"""(function () {{
        var th = document.querySelector('#{table_id} thead tr').cells[{column}];
        th.scrollIntoView({{block: 'center'}});
        var r = th.getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2]; }})()""")
    page.click(x, y)


def test_loads_without_errors_or_network_and_saves_a_screenshot(loaded_page, note):
    page = loaded_page
    assert page.errors() == []
    assert [u for u in page.requested_urls() if not u.startswith(("file:", "data:"))] == []
    images = page.evaluate("Array.from(document.images).map(function (i) { return [i.complete, i.naturalWidth]; })")
    assert len(images) >= 3 and all(done and width > 100 for done, width in images)
    assert page.evaluate("document.documentElement.classList.contains('js')")
    png = page.full_page_png()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000
    path = os.path.join(artifacts_dir(), "report-full-page.png")
    with open(path, "wb") as f:
        f.write(png)
    note(f"full-page screenshot of the report: {path}")


def test_the_critical_difference_diagrams_render(loaded_page):
    """The rank diagrams (lib.report.statistics.cd_diagram): models and scores over the OOD sets,
    models over the MNIST-C corruptions, each a decoded PNG of a real size."""
    images = loaded_page.evaluate("""Array.from(document.querySelectorAll('figure[id^="cd-"] img')).map(
        function (i) { return [i.closest('figure').id, i.complete, i.naturalWidth, i.naturalHeight]; })""")
    assert sorted(fid for fid, *_ in images) == ["cd-models_mnistc", "cd-models_ood", "cd-scores_far",
                                                 "cd-scores_full_spectrum", "cd-scores_near", "cd-scores_ood"]
    assert all(done and width > 300 and height > 100 for _, done, width, height in images)
    assert loaded_page.errors() == []


def test_clicking_a_header_sorts_that_table(loaded_page):
    page = loaded_page
    table = "detection-auroc"
    before = column_values(page, table, 1)
    labels_before = column_values(page, table, 0)
    other_table = column_values(page, "detection-fpr95", 0)
    assert before != sorted(before), "pick a column that is not already in order"
    click_header(page, table, 1)
    ascending = column_values(page, table, 1)
    assert ascending == sorted(before)
    assert page.evaluate(f"document.querySelector('#{table} thead tr').cells[1].getAttribute('aria-sort')") == "ascending"
    click_header(page, table, 1)
    assert column_values(page, table, 1) == sorted(before, reverse=True)
    # Rows move whole: each label keeps its numbers.
    pairs_before = dict(zip(labels_before, before))
    assert dict(zip(column_values(page, table, 0), column_values(page, table, 1))) == pairs_before
    click_header(page, table, 0)
    assert column_values(page, table, 0) == sorted(labels_before, key=str.casefold)  # locale order ignores case
    assert column_values(page, "detection-fpr95", 0) == other_table
    assert page.errors() == []


def test_plugin_tables_sort_and_summary_rows_stay_below(loaded_page):
    """The robustness plug-in's table sorts its corruptions; its mean and mCE rows (the
    footer) stay below them. The evaluation plug-in's set sizes sort too."""
    page = loaded_page
    footer = "Array.from(document.querySelectorAll('#robustness-table tfoot tr')).map(function (tr) { return tr.cells[0].textContent; })"
    summary_rows = page.evaluate(footer)
    before = column_values(page, "robustness-table", 1)
    assert len(before) == 15 and len(summary_rows) == 3 and before != sorted(before)
    click_header(page, "robustness-table", 1)
    assert column_values(page, "robustness-table", 1) == sorted(before)
    assert page.evaluate(footer) == summary_rows
    sizes = column_values(page, "detection-sizes", 0)
    click_header(page, "detection-sizes", 0)
    click_header(page, "detection-sizes", 0)
    assert column_values(page, "detection-sizes", 0) == sorted(sizes, key=str.casefold, reverse=True)
    assert page.errors() == []


def test_reads_the_same_without_javascript(browser, report_url, loaded_page):
    page = browser.new_page()
    page.call("Emulation.setScriptExecutionDisabled", value=True)
    page.load(report_url)
    tables = "JSON.stringify(Array.from(document.querySelectorAll('table')).map(function (t) { return t.id; }))"
    assert json.loads(page.evaluate(tables)) == json.loads(loaded_page.evaluate(tables))
    assert not page.evaluate("document.documentElement.classList.contains('js')")
    text = page.evaluate("document.body.innerText")
    for heading in ("Summary: the study's two tables", "OOD detection", "Training", "Provenance"):
        assert heading in text
    assert page.evaluate("document.querySelectorAll('td[data-value]').length") > 80
    assert page.errors() == []


def test_the_error_check_sees_errors(browser):
    """The no-error assertions above can fail: a page with a console error and a throw."""
    page = browser.new_page()
    page.load("data:text/html,<script>console.error('boom'); undefinedFunction();</script>")
    kinds = sorted(kind for kind, *_ in page.errors())
    assert kinds == ["console", "exception"]
