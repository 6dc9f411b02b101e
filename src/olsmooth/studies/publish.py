"""A finished study published into a docs folder, and the check that a published page is what its data regenerates."""

from __future__ import annotations

import difflib
import io
import re
from pathlib import Path

from ..errors import UserInputError
from ..fileio import atomic_write_bytes
from .results import CSV_NAME, FIGURE_NAME, MEMORISATION_FIGURE, markdown_text, read_results_csv, top1_figure
from .spec import Study

PUBLISHED_PAGES, PUBLISHED_FIGURES = "benchmarks", "figures"
"""Under a docs folder: a study's page and per-run data (NAME.md, NAME.csv), and its figures (NAME-*.png)."""
_OUT_LINE = re.compile(r"run folders under `([^`]+)`")


def published_links(study: Study) -> dict[str, str]:
    """The links a published page uses for the study's figures."""
    return {FIGURE_NAME: f"../{PUBLISHED_FIGURES}/{study.name}-top1.png",
            MEMORISATION_FIGURE: f"../{PUBLISHED_FIGURES}/{study.name}-memorisation.png"}


def publish(study: Study, out: str | Path, docs: str | Path, source: str | Path | None = None) -> list[Path]:
    """Copy a finished study's results into a docs folder: its per-run data verbatim, its page and top-1 figure
    regenerated from that data (the page with the figures' links), and the memorisation figure of its run folders
    where there is one; returns the paths written. The data is OUT/results.csv, or `source`: a results.csv from
    elsewhere, such as the rows of seeds trained on several machines, concatenated."""
    out, docs = Path(out), Path(docs)
    if source is None and not (out / CSV_NAME).is_file():
        raise UserInputError(f"{out / CSV_NAME}: no such file; the study has not written its results yet")
    source = Path(source or out / CSV_NAME)
    rows = read_results_csv(study, source)  # a missing or malformed CSV stops here, before anything is written
    data = source.read_bytes()
    pages, figures, links = docs / PUBLISHED_PAGES, docs / PUBLISHED_FIGURES, published_links(study)
    figure = io.BytesIO()
    top1_figure(study, rows).savefig(figure, format="png", dpi=120)
    written = {pages / f"{study.name}.csv": data,
               pages / f"{study.name}.md": markdown_text(study, rows, out, links).encode("utf-8"),
               figures / Path(links[FIGURE_NAME]).name: figure.getvalue()}
    if (out / MEMORISATION_FIGURE).is_file():
        written[figures / Path(links[MEMORISATION_FIGURE]).name] = (out / MEMORISATION_FIGURE).read_bytes()
    for path, content in written.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, content)
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
