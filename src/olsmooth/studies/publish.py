"""A finished study published into a docs folder, and the check that a published page is what its data regenerates."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from ..errors import UserInputError
from ..fileio import atomic_write_file
from .results import CSV_NAME, FIGURE_NAME, MEMORISATION_FIGURE, markdown_text, read_results_csv
from .spec import Study

PUBLISHED_PAGES, PUBLISHED_FIGURES = "benchmarks", "figures"
"""Under a docs folder: a study's page and per-run data (NAME.md, NAME.csv), and its figures (NAME-*.png)."""
_OUT_LINE = re.compile(r"run folders under `([^`]+)`")


def published_links(study: Study) -> dict[str, str]:
    """The links a published page uses for the study's figures."""
    return {FIGURE_NAME: f"../{PUBLISHED_FIGURES}/{study.name}-top1.png",
            MEMORISATION_FIGURE: f"../{PUBLISHED_FIGURES}/{study.name}-memorisation.png"}


def publish(study: Study, out: str | Path, docs: str | Path) -> list[Path]:
    """Copy a finished study's results into a docs folder: its per-run data verbatim, its page regenerated from
    that data with the figures' links, and its figures; returns the paths written."""
    out, docs = Path(out), Path(docs)
    source = out / CSV_NAME
    if not source.is_file():
        raise UserInputError(f"{source}: no such file; the study has not written its results yet")
    data = source.read_bytes()
    rows = read_results_csv(study, source)
    pages, figures = docs / PUBLISHED_PAGES, docs / PUBLISHED_FIGURES
    written = {pages / f"{study.name}.csv": data,
               pages / f"{study.name}.md": markdown_text(study, rows, out, published_links(study)).encode("utf-8")}
    for name, link in published_links(study).items():
        if (out / name).is_file():
            written[figures / Path(link).name] = (out / name).read_bytes()
    for path, content in written.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_file(path, lambda handle, content=content: handle.write(content))
    return list(written)


def published_page_difference(study: Study, docs: str | Path) -> str:
    """'' when docs/benchmarks/NAME.md is exactly the page its committed NAME.csv regenerates, else a unified
    diff (published page first); the run folders named on the page are not needed."""
    pages = Path(docs) / PUBLISHED_PAGES
    page = (pages / f"{study.name}.md").read_text(encoding="utf-8")
    found = _OUT_LINE.search(page)
    out = found.group(1) if found else f"runs/{study.name}"
    rows = read_results_csv(study, pages / f"{study.name}.csv")
    fresh = markdown_text(study, rows, out, published_links(study))
    return "".join(difflib.unified_diff(page.splitlines(True), fresh.splitlines(True), "published", "regenerated"))
