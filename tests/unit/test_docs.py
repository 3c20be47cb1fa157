"""The documentation stays true to the tree: README.md and docs/*.md link only to files and
headings that exist, name only files and modules that exist, and the README stays short.

    .venv/bin/python -m pytest -q tests/unit/test_docs.py
"""
import importlib
import re
from pathlib import Path

import pytest

from tests.helpers import ROOT

REPO = Path(ROOT)
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
NOTES = [*PAGES, *sorted((REPO / "benchmarks").glob("*.md"))]
README_MAX_LINES = 250

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
CODE_SPAN = re.compile(r"`([^`\n]+)`")
# Repository paths a page may name in a code span; results/, tests/ and git-ignored
# outputs are left out (they exist only after a run, or move with the test tiers).
REPO_PATH = re.compile(r"^(?:lib|workflow|benchmarks|presets|profiles|docs)/[\w./-]*$")
MODULE_NAME = re.compile(r"\blib(?:\.\w+)+")


def prose(text):
    """The page without its fenced code blocks (commands and sample output, not references)."""
    return FENCE.sub("", text)


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page):
    return {slug(line.lstrip("#")) for line in prose(page.read_text()).splitlines() if line.startswith("#")}


def relative_links(page):
    for target in LINK.findall(prose(page.read_text())):
        if not re.match(r"^[a-z]+:", target):          # http:, https:, mailto: are not checked
            yield target


def test_slug_follows_githubs_rule():
    assert slug("Overriding sources and pinning checksums: `data_sources`") == \
        "overriding-sources-and-pinning-checksums-data_sources"
    assert slug("1. Install into a shared environment") == "1-install-into-a-shared-environment"


@pytest.mark.parametrize("page", NOTES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_points_to_an_existing_file_and_heading(page):
    broken = []
    for target in relative_links(page):
        path, _, fragment = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no file {file.relative_to(REPO) if file.is_relative_to(REPO) else file}")
        elif fragment and file.suffix == ".md" and fragment not in anchors(file):
            broken.append(f"{target}: no heading #{fragment} in {file.relative_to(REPO)}")
    assert not broken, f"{page.relative_to(REPO)} has broken links:\n" + "\n".join(broken)


def test_the_docs_pages_are_linked_from_the_readme():
    linked = {(REPO / t.partition("#")[0]).resolve() for t in relative_links(REPO / "README.md")}
    unlinked = [p.name for p in PAGES[1:] if p.resolve() not in linked]
    assert not unlinked, f"docs pages the README does not list: {unlinked}"


def test_readme_fits_on_a_few_screens():
    lines = len((REPO / "README.md").read_text().splitlines())
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines (at most {README_MAX_LINES}): move detail into docs/ and link it")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_named_repository_paths_exist(page):
    missing = [span for span in CODE_SPAN.findall(prose(page.read_text()))
               if REPO_PATH.match(span) and not span.startswith("benchmarks/out/")
               and not (REPO / span).exists()]
    assert not missing, f"{page.relative_to(REPO)} names paths that do not exist: {missing}"


def resolves(dotted):
    """Whether lib.a.b[.name...] is a module, or a module with that attribute."""
    parts = dotted.split(".")
    for cut in range(len(parts), 1, -1):
        try:
            thing = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            if not hasattr(thing, name):
                return False
            thing = getattr(thing, name)
        return True
    return False


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_named_modules_and_functions_exist(page):
    names = {name for span in CODE_SPAN.findall(page.read_text()) for name in MODULE_NAME.findall(span)}
    missing = sorted(name for name in names if not resolves(name))
    assert not missing, f"{page.relative_to(REPO)} names modules or functions that do not exist: {missing}"


def test_notes_speak_of_the_project_not_of_sessions():
    pattern = re.compile(r"\b(?:this|previous|earlier|next|later|that) session\b|\bsession \d+|was lent|lent to",
                         re.I)
    found = [f"{p.relative_to(REPO)}: {m.group(0)}" for p in NOTES for m in pattern.finditer(p.read_text())]
    assert not found, "project text speaks of work sessions or lent machines:\n" + "\n".join(found)
