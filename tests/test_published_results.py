"""Every published study page regenerates from its committed per-run data, an edited figure is caught, and the
hand-written pages quote what the generated pages print.

docs/benchmarks/NAME.csv holds one row per run and seed (written by `olsmooth study --publish`), or, for a page a
benchmark writes (BENCHMARK_PAGES), the benchmark's per-run rows (its --publish); NAME.md must be exactly the page
that CSV regenerates. Study pages that have no committed data yet are listed here by name, so the
list can only shrink, and each carries a banner saying so.

The hand-written pages (README.md, docs/results*.md, ...) quote figures of the generated pages, and a rerun moves
those silently: QUOTED declares, per hand-written page, each figure it quotes from a regenerated page, printed as
that page prints it, and each must occur in both pages (a typographic minus counts as "-"). When a study is rerun
this fails until the quotes, and the claims resting on them, are brought up to date. FROM_CSV does the same for
figures computed from a CSV column that no generated page prints (train top-1, the OLS rows' noise mass), and the
family page's OLS-matrix table is regenerated from its committed matrices.
"""

from __future__ import annotations

import csv
import importlib
import re
import shutil
import statistics
import sys
from pathlib import Path

import pytest

from olsmooth.studies.publish import published_page_difference
from olsmooth.studies.spec import load_study, resolve_study_path, studies_dir

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = DOCS / "benchmarks"
# Study pages a benchmark writes, not `olsmooth study`: page -> (the benchmark module, the study), whose
# published_page_difference(docs, study) regenerates the page from its committed CSV.
BENCHMARK_PAGES = {"family-snapshots-fashion-mnist": ("benchmarks.snapshots", "family-snapshots-fashion-mnist"),
                   "accuracy-fashion-mnist-snapshots": ("benchmarks.snapshots", "accuracy-fashion-mnist"),
                   "robustness-fashion-mnist": ("benchmarks.robustness", "robustness-fashion-mnist")}

STUDY_NAMES = sorted(path.stem for path in studies_dir().glob("*.yaml"))
CHECKED = sorted(path.stem for path in PAGES.glob("*.csv") if path.stem in STUDY_NAMES or path.stem in BENCHMARK_PAGES)


def _difference(name: str, docs: Path) -> str:
    """The diff between docs/benchmarks/NAME.md and the page its CSV regenerates ('' when equal)."""
    if name in BENCHMARK_PAGES:
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        module, study = BENCHMARK_PAGES[name]
        return importlib.import_module(module).published_page_difference(docs, load_study(resolve_study_path(study)))
    return published_page_difference(load_study(resolve_study_path(name)), docs)


def test_some_pages_are_checked() -> None:
    assert len(CHECKED) >= 3
    assert set(BENCHMARK_PAGES) <= set(CHECKED)


@pytest.mark.parametrize("name", CHECKED)
def test_page_regenerates_from_its_data(name: str) -> None:
    difference = _difference(name, DOCS)
    assert difference == "", f"docs/benchmarks/{name}.md differs from what its CSV regenerates:\n{difference}"


@pytest.mark.parametrize("name", sorted({CHECKED[0], *BENCHMARK_PAGES}))
def test_an_edited_figure_is_caught(tmp_path: Path, name: str) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(PAGES, docs / "benchmarks")
    page = docs / "benchmarks" / f"{name}.md"
    text = page.read_text(encoding="utf-8")
    row = next(line for line in text.splitlines() if line.startswith("| ") and " ± " in line)
    value = re.search(r"\| (\d+\.\d+) ± ", row).group(1)
    edited = row.replace(f"| {value} ± ", f"| {float(value) + 0.01:.{len(value.split('.')[-1])}f} ± ", 1)
    assert edited != row
    page.write_text(text.replace(row, edited), encoding="utf-8")
    difference = _difference(name, docs)
    assert edited in difference and row in difference


def test_every_study_page_is_checked() -> None:
    """A page named after a study (or a benchmark page of BENCHMARK_PAGES) has its per-run data beside it."""
    pages = {path.stem for path in PAGES.glob("*.md") if path.stem in STUDY_NAMES or path.stem in BENCHMARK_PAGES}
    assert pages <= set(CHECKED), f"study pages without committed data: {sorted(pages - set(CHECKED))}"


MANY = "many-classes-glyphs-1000"
MANY_ALL = "many-classes-glyphs-3755"
NOISY = "noisy-fashion-mnist"
FITTED = "family-fitted-fashion-mnist"
NORM = "family-transfer-norm-fashion-mnist"
PX64 = "family-transfer-64px-fashion-mnist"
SNAPSHOTS = "family-snapshots-fashion-mnist"
ROBUST = "robustness-fashion-mnist"
T32 = "family-transfer-fashion-mnist"
BN = "family-transfer-fashion-mnist-bn"  # benchmarks.bn_recompute's per-run data for the CE cell of T32
KAI = "many-classes-glyphs-1000-kai"
KAI_CAL = "many-classes-glyphs-1000-kai-calibration"
KAI_BASE = "many-classes-glyphs-1000-kai-baselines"
ACC = "accuracy-fashion-mnist"
ACC_SNAP = "accuracy-fashion-mnist-snapshots"
COMPANION_PAGES = {f"{MANY}-calibration", KAI_CAL}
"""Pages a benchmark writes beside a study's page from its own committed CSVs; tests/test_benchmark_many_classes.py
regenerates each from them, so figures may be quoted from them too."""


def _quotes(stem: str, *figures: str) -> list[tuple[str, str]]:
    return [(stem, figure) for figure in figures]


# Hand-written page (relative to the repository root) -> (generated page stem, figure) for every figure it quotes
# from a page regenerated from its committed data.
QUOTED: dict[str, list[tuple[str, str]]] = {
    "README.md": [
        *_quotes(ACC, "84.41 ± 0.03", "2.14 ± 0.16", "86.43 ± 0.14", "1.27 ± 0.27", "84.22 ± 0.07", "10.82 ± 0.17",
                 "86.15 ± 0.11", "9.71 ± 0.04", "82.22 ± 0.06", "15.13 ± 0.21", "83.74 ± 0.09", "12.98 ± 0.18",
                 "82.72 ± 0.27", "14.89 ± 0.28", "84.39 ± 0.22", "12.83 ± 0.12", "71.52 ± 0.40", "48.43 ± 0.32",
                 "67.03 ± 1.53", "44.27 ± 1.42", "1.500", "2.697", "0.002", "0.060", "0.022"),
        *_quotes(T32, "+2.200", "+1.743", "3.152", "3.836"),
        *_quotes(MANY, "98.20 ± 0.25", "99.37 ± 0.03", "99.53 ± 0.13", "99.55 ± 0.22", "+0.167", "0.340",
                 "0.88 ± 0.13", "17.45 ± 0.06", "9.49 ± 0.10"),
        *_quotes(KAI, "25.93 ± 0.89", "32.34 ± 0.90", "35.84 ± 0.94", "38.67 ± 1.05", "+3.506", "1.823", "0.006",
                 "+6.339", "3.04 ± 0.48", "30.02 ± 0.82"),
        *_quotes(NOISY, "+2.667", "+7.927", "+13.497", "0.096", "0.223", "0.075", "21.66", "34.12", "2.90", "5.06"),
        *_quotes(FITTED, "1.94", "12.20", "+0.394", "0.544", "+0.504", "0.450", "0.213"),
        *_quotes(PX64, "7.553", "86.54", "87.08", "1.000"),
        *_quotes(ROBUST, "+7.500", "0.002", "+6.167", "0.005", "1.333"),
    ],
    "docs/results.md": [
        *_quotes(ACC, "84.41 ± 0.03", "0.4412 ± 0.0028", "2.14 ± 0.16", "84.22 ± 0.07", "0.5184 ± 0.0024",
                 "10.82 ± 0.17", "-0.187", "0.264", "0.229", "82.22 ± 0.06", "0.5893 ± 0.0018", "15.13 ± 0.21",
                 "-2.190", "0.255", "0.006", "-2.003", "0.352", "0.011", "82.72 ± 0.27", "0.5758 ± 0.0018",
                 "14.89 ± 0.28", "-1.687", "0.968", "0.060", "-1.500", "0.858", "71.52 ± 0.40", "1.5926 ± 0.0057",
                 "48.43 ± 0.32", "-12.883", "1.351", "0.005", "-12.697", "1.396", "86.43 ± 0.14", "0.3872 ± 0.0037",
                 "1.27 ± 0.27", "86.15 ± 0.11", "0.4603 ± 0.0037", "9.71 ± 0.04", "-0.280", "0.449", "83.74 ± 0.09",
                 "0.5268 ± 0.0033", "12.98 ± 0.18", "-2.697", "0.180", "0.002", "-2.417", "0.367", "0.009",
                 "84.39 ± 0.22", "0.5115 ± 0.0050", "12.83 ± 0.12", "-2.047", "0.648", "0.022", "-1.767", "0.360",
                 "0.013", "67.03 ± 1.53", "1.6160 ± 0.0206", "44.27 ± 1.42", "-19.400", "5.133", "0.017", "-19.120",
                 "4.728", "1.500", "1.27", "9.71", "2.14", "+0.071", "0.001", "+4.316", "0.319", "+0.148", "0.000",
                 "+12.992", "0.383", "+0.057", "0.004", "+4.071", "0.592", "0.003", "+0.135", "+12.746", "0.656",
                 "+0.077", "+8.675", "0.068", "+0.067", "+3.270", "0.544", "+0.140", "+11.705", "1.310", "+0.051",
                 "+3.125", "0.311", "+0.124", "+11.560", "1.132", "+0.073", "+8.435", "1.005", "0.071", "2.003",
                 "2.417", "1.767", "82.72", "82.22", "84.39", "83.74", "12.83", "44.27", "67.03"),
        *_quotes(ACC_SNAP, "82.67 ± 0.36", "82.79 ± 0.25", "82.79 ± 0.09", "-1.620", "0.376", "82.92 ± 0.18",
                 "82.78 ± 0.26", "82.51 ± 0.36", "-1.707", "1.078", "0.061", "81.04 ± 0.05", "80.87 ± 0.24",
                 "80.64 ± 0.12", "-1.580", "0.204", "81.55 ± 0.25", "81.47 ± 0.35", "81.11 ± 0.50", "-1.613", "0.752",
                 "0.047", "70.55 ± 0.44", "70.07 ± 0.19", "69.84 ± 0.32", "-1.683", "1.637", "85.13 ± 0.35",
                 "84.84 ± 0.31", "84.84 ± 0.30", "-1.593", "1.289", "84.72 ± 0.25", "84.31 ± 0.11", "84.59 ± 0.08",
                 "-1.563", "0.199", "81.97 ± 0.21", "82.09 ± 0.29", "81.69 ± 0.44", "1.557", "82.93 ± 0.43",
                 "82.82 ± 0.25", "82.45 ± 0.07", "-1.937", "0.930", "65.28 ± 0.65", "64.88 ± 1.03", "64.51 ± 0.69",
                 "-2.527", "2.782", "1.563", "0.237", "0.547"),
        *_quotes(NOISY, "+2.667", "+13.497", "+1.220", "+11.637", "0.027", "21.66", "34.12", "2.90", "5.06"),
        *_quotes(FITTED, "+0.504", "0.450", "0.213", "-1.334", "0.008", "1.94", "12.20"),
        *_quotes(ROBUST, "+7.500", "+6.167", "0.002", "0.005", "1.333", "+4.900", "+2.467"),
        *_quotes(KAI, "+3.506", "0.006"),
    ],
    "docs/models.md": [
        *_quotes(T32, "5.477", "80.95", "75.48"),
        *_quotes(PX64, "7.553", "86.57", "79.02"),
        *_quotes(NORM, "-0.037", "1.884", "0.922"),
    ],
    "docs/results/family-fashion-mnist.md": [
        *_quotes(T32, "75.48 ± 1.12", "0.6452 ± 0.0284", "1.21 ± 0.38", "-5.477", "4.933", "0.465", "-7.677", "2.289",
                 "0.058", "60.43 ± 13.88", "1.0489 ± 0.3904", "6.39 ± 2.74", "-20.520", "47.160", "-22.720", "44.010",
                 "80.95 ± 0.59", "0.5217 ± 0.0183", "1.94 ± 0.23", "-2.200", "3.152", "0.971", "83.15 ± 0.45",
                 "0.5346 ± 0.0144", "7.14 ± 0.81", "+2.200", "82.70 ± 1.02", "0.5264 ± 0.0224", "7.78 ± 0.48", "+1.743",
                 "3.836", "-0.457", "2.560", "79.19 ± 3.78", "0.6253 ± 0.0936", "9.12 ± 1.44", "-1.760", "11.707",
                 "-3.960", "11.873", "82.40 ± 0.12", "0.5318 ± 0.0057", "7.92 ± 0.64", "+1.450", "2.229", "-0.750",
                 "1.059", "76.12 ± 1.02", "1.3860 ± 0.0273", "46.24 ± 0.46", "-4.830", "1.388", "0.057", "-7.030",
                 "4.462", "0.247", "77.22 ± 4.45", "0.6687 ± 0.1327", "9.37 ± 2.96", "-3.733", "16.477", "-5.933",
                 "13.451", "79.73 ± 1.55", "0.5894 ± 0.0475", "8.19 ± 0.88", "-1.220", "6.777", "-3.420",
                 "82.74 ± 1.88", "0.4910 ± 0.0425", "1.39 ± 0.62", "+1.790", "5.513", "-0.410", "5.905", "82.70 ± 0.73",
                 "0.6263 ± 0.0139", "15.37 ± 0.59", "+1.747", "1.724", "0.525", "-0.453", "0.4910", "0.5217"),
        *_quotes(FITTED, "82.72 ± 0.43", "0.9022 ± 0.0386", "12.20 ± 0.48", "82.66 ± 0.43", "-0.270", "0.450", "0.957",
            "82.99 ± 0.30", "0.6125 ± 0.0103", "5.11 ± 0.31", "82.92 ± 0.31", "+0.270", "82.84 ± 0.47",
            "0.5811 ± 0.0178", "7.95 ± 0.38", "82.76 ± 0.40", "+0.120", "0.400", "1.000", "-0.150", "0.425",
            "83.11 ± 0.39", "0.5180 ± 0.0135", "1.94 ± 0.20", "83.11 ± 0.48", "+0.394", "0.544", "0.713", "+0.124",
            "0.333", "82.88 ± 0.46", "0.5797 ± 0.0189", "8.03 ± 0.46", "82.84 ± 0.49", "+0.166", "0.355", "-0.104",
            "0.311", "81.38 ± 0.43", "1.2626 ± 0.0044", "48.81 ± 0.45", "81.31 ± 0.43", "-1.334", "0.482", "0.008",
            "-1.604", "0.318", "0.001", "83.22 ± 0.38", "0.5677 ± 0.0181", "8.14 ± 0.38", "83.19 ± 0.35", "+0.504",
            "0.213", "+0.234", "0.208", "82.63 ± 0.42", "0.7991 ± 0.0296", "11.45 ± 0.44", "82.51 ± 0.45", "-0.090",
            "0.132", "0.747", "-0.360", "0.491", "82.86 ± 0.38", "0.7461 ± 0.0197", "10.28 ± 0.36", "82.90 ± 0.39",
            "+0.142", "0.299", "-0.128", "0.223", "82.98 ± 0.32", "0.6858 ± 0.0074", "13.70 ± 0.37", "83.00 ± 0.34",
            "+0.260", "0.454", "-0.010", "0.246", "12.20", "0.9022", "1.94", "0.5180", "5.11", "0.6125", "0.5811",
            "0.5797", "7.95", "8.03", "8.14", "11.45", "10.28", "13.70", "-3.169", "0.706", "0.000"),
        *_quotes(NORM, "80.92 ± 1.12", "80.95 ± 0.59", "-0.037", "1.884", "0.922"),
        *_quotes(SNAPSHOTS, "83.64 ± 0.41", "83.45 ± 0.39", "-0.192", "0.103", "82.94 ± 0.19", "-0.700", "0.015",
            "83.65 ± 0.30", "83.51 ± 0.29", "-0.142", "82.88 ± 0.24", "-0.774", "0.004", "83.15 ± 0.25",
            "83.02 ± 0.23", "-0.132", "82.35 ± 0.17", "-0.800", "83.63 ± 0.32", "83.39 ± 0.44", "-0.232", "0.108",
            "82.86 ± 0.38", "-0.768", "0.012", "83.17 ± 0.26", "82.96 ± 0.34", "-0.212", "82.33 ± 0.16", "-0.842",
            "0.001", "75.18 ± 0.45", "75.14 ± 0.44", "-0.044", "0.111", "74.60 ± 0.34", "-0.584", "83.32 ± 0.17",
            "83.12 ± 0.13", "-0.196", "0.011", "82.50 ± 0.23", "-0.822", "83.12 ± 0.22", "83.05 ± 0.24", "-0.068",
            "82.42 ± 0.27", "-0.704", "83.58 ± 0.35", "83.32 ± 0.32", "-0.258", "0.034", "82.77 ± 0.19", "-0.816",
            "0.008", "83.78 ± 0.23", "83.56 ± 0.25", "-0.220", "0.019", "82.86 ± 0.20", "-0.918", "0.002", "0.584",
            "0.918", "83.12", "83.78"),
        *_quotes(PX64, "86.57", "79.02", "7.553", "3.800", "0.070", "79.02 ± 0.64", "0.5616", "1.57", "-7.553",
            "-8.063", "3.435", "0.056", "86.57 ± 0.78", "0.3950", "2.42", "-0.510", "1.263", "1.000", "87.08 ± 0.90",
            "0.4208", "4.92", "+0.510", "86.91 ± 0.50", "0.3931", "4.38", "+0.340", "1.326", "-0.170", "1.309",
            "86.97 ± 0.65", "0.3944", "4.66", "+0.400", "0.905", "-0.110", "0.849", "86.54 ± 0.50", "0.4088", "5.20",
            "-0.030", "1.900", "-0.540", "1.569", "86.54", "87.08", "0.110", "-0.028", "0.030", "0.213", "-0.026",
            "0.024", "0.195"),
    ],
    "docs/results/noisy-fashion-mnist.md": [
        *_quotes(NOISY, "84.26 ± 0.16", "7.75 ± 0.38", "78.32 ± 0.41", "67.25 ± 0.62", "49.01 ± 0.33", "66.43 ± 0.47",
            "84.55 ± 0.20", "79.77 ± 0.44", "69.17 ± 1.01", "50.87 ± 0.11", "67.19 ± 0.26", "84.44 ± 0.15",
            "80.99 ± 0.25", "75.18 ± 1.07", "62.50 ± 0.49", "67.90 ± 0.54", "84.57 ± 0.17", "79.42 ± 0.60",
            "68.76 ± 0.55", "50.44 ± 0.48", "65.68 ± 0.26", "55.27 ± 0.74", "49.87 ± 4.86", "45.02 ± 8.83",
            "64.62 ± 12.29", "40.24 ± 5.71", "83.07 ± 0.48", "82.19 ± 0.16", "80.76 ± 0.31", "77.24 ± 1.79",
            "66.11 ± 4.35", "84.13 ± 0.23", "78.40 ± 0.24", "67.64 ± 0.74", "49.31 ± 0.45", "66.60 ± 0.55",
            "84.15 ± 0.07", "78.74 ± 0.32", "68.53 ± 0.98", "51.88 ± 1.12", "69.52 ± 1.02", "+0.180", "0.098", "0.484",
            "+2.667", "0.588", "0.096", "+7.927", "2.766", "0.223", "+13.497", "2.574", "0.075", "+1.477", "3.142",
            "1.000", "-0.117", "0.180", "+1.220", "1.079", "0.874", "+6.010", "1.464", "0.115", "+11.637", "1.308",
            "0.027", "+0.713", "2.364", "-1.187", "1.065", "+3.867", "1.614", "0.314", "+13.513", "1.840", "0.039",
            "+28.237", "6.888", "-0.320", "15.475", "84.12 ± 0.22", "80.86 ± 0.47", "78.55 ± 0.27", "73.82 ± 1.68",
            "71.49 ± 1.16", "84.47 ± 0.36", "81.14 ± 0.64", "79.03 ± 0.37", "74.15 ± 1.48", "72.87 ± 2.32",
            "84.27 ± 0.10", "81.54 ± 0.20", "79.45 ± 0.56", "75.75 ± 1.41", "72.97 ± 0.18", "84.41 ± 0.32",
            "81.11 ± 0.75", "78.28 ± 0.98", "73.87 ± 1.61", "70.38 ± 1.19", "55.17 ± 0.80", "52.26 ± 4.37",
            "56.96 ± 4.14", "64.87 ± 11.84", "41.21 ± 4.98", "82.98 ± 0.48", "82.22 ± 0.13", "80.63 ± 0.32",
            "77.58 ± 1.24", "68.50 ± 4.90", "83.99 ± 0.28", "81.05 ± 0.46", "78.67 ± 0.41", "74.05 ± 1.23",
            "71.34 ± 1.70", "84.10 ± 0.36", "80.48 ± 0.59", "78.77 ± 0.31", "73.42 ± 1.91", "73.96 ± 1.95",
            "2.90 ± 0.52", "5.06 ± 1.24", "4.70 ± 1.10", "8.69 ± 1.37", "5.31 ± 0.24", "13.59 ± 0.61", "14.99 ± 2.03",
            "8.06 ± 0.11", "2.51 ± 0.23", "2.89 ± 0.33", "21.66 ± 0.47", "33.11 ± 1.82", "34.12 ± 0.53", "5.27 ± 0.31",
            "2.36 ± 0.20", "14.55 ± 0.93", "20.57 ± 1.20", "14.82 ± 0.34", "2.61 ± 0.16", "10.76 ± 0.64",
            "10.38 ± 0.23", "9.08 ± 0.47", "2.95 ± 0.55", "15.42 ± 5.98", "7.36 ± 0.40", "15.06 ± 2.43", "31.36 ± 0.45",
            "42.22 ± 2.54", "5.60 ± 3.03", "5.15 ± 0.35", "20.11 ± 4.43", "34.91 ± 0.42", "44.70 ± 1.70",
            "14.83 ± 4.04", "3.66 ± 1.01", "25.79 ± 1.34", "45.36 ± 1.50", "54.26 ± 1.40", "17.52 ± 2.67",
            "3.07 ± 0.72", "26.88 ± 2.33", "45.67 ± 2.71", "52.51 ± 0.90", "7.47 ± 1.22", "10.86 ± 0.67",
            "10.35 ± 0.06", "9.16 ± 0.26", "2.93 ± 0.35", "11.85 ± 5.10", "21.66", "34.12", "2.90", "5.06", "+18.758",
            "+28.053", "+29.420", "1.563", "2.939", "3.322", "0.014", "0.021", "0.024", "25.79", "54.26", "15.06",
            "42.22", "63.94", "31.17", "69.11", "24.53", "74.57", "16.44", "77.22", "22.34", "52.61", "41.44", "63.50",
            "30.19", "71.43", "19.52", "78.69", "20.67", "36.56", "55.28", "39.28", "50.08", "45.11", "40.11", "65.75",
            "33.25", "66.06", "30.22", "70.19", "25.03", "76.35", "15.94", "82.50", "17.14", "5.67", "79.50", "6.58",
            "77.31", "8.28", "73.63", "55.87", "37.82", "56.44", "37.11", "61.03", "31.28", "64.93", "22.43", "59.52",
            "39.72", "+1.097", "+1.510", "+1.430", "1.351", "1.082", "1.295", "0.675", "+1.447", "+1.917", "+1.860",
            "0.501", "0.644", "-0.350", "-0.407", "-0.430", "0.598", "1.504", "1.404", "-0.747", "2.310", "+3.097",
            "1.780", "0.509", "+0.077", "+0.387", "+0.300", "+0.413", "+1.280", "+2.877", "2.579", "+0.313", "0.236",
            "0.710", "2.36", "2.89", "7.75", "5.31", "-4.867", "-5.396", "0.231", "0.080", "± 4.35", "± 4.86",
            "± 12.29"),
    ],
    "docs/results/robustness-fashion-mnist.md": [
        *_quotes(NOISY, "7.75", "2.36", "2.89", "21.66", "34.12"),
        *_quotes(ROBUST, "84.07 ± 0.08", "0.4410 ± 0.0019", "2.24 ± 0.39", "0.860 ± 0.020", "0.4387 ± 0.0019",
                 "0.74 ± 0.11", "83.92 ± 0.05", "0.5209 ± 0.0036", "10.77 ± 0.20", "0.628 ± 0.010", "0.4491 ± 0.0035",
                 "1.51 ± 0.27", "82.74 ± 0.07", "0.5741 ± 0.0023", "14.88 ± 0.09", "0.514 ± 0.005", "0.4668 ± 0.0024",
                 "1.19 ± 0.29", "0.010", "0.013", "0.028", "0.002", "0.771", "0.451", "0.701", "0.068", "1.333",
                 "0.001", "85.47 ± 0.23", "76.03 ± 0.35", "75.97 ± 0.45", "75.77 ± 0.64", "48.83 ± 1.42",
                 "37.87 ± 0.93", "37.90 ± 0.82", "38.13 ± 1.24", "85.30 ± 0.60", "77.10 ± 0.20", "76.93 ± 0.25",
                 "76.47 ± 0.55", "78.73 ± 0.67", "52.37 ± 1.16", "42.77 ± 1.16", "42.93 ± 1.29", "40.60 ± 1.20",
                 "50.77 ± 2.23", "83.83 ± 0.40", "76.67 ± 0.25", "76.73 ± 0.29", "75.93 ± 0.15", "77.93 ± 0.45",
                 "54.90 ± 1.68", "45.37 ± 1.37", "45.43 ± 1.16", "44.30 ± 1.74", "52.80 ± 1.05", "+7.500", "+7.533",
                 "+6.167", "0.005", "+4.900", "0.029", "+5.033", "+2.467", "0.136", "5.750", "+1.067", "0.047",
                 "+0.967", "0.095", "+0.700", "0.217", "0.076", "0.630", "83.83", "85.47", "45.37", "52.80", "45.43",
                 "76.67", "77.10", "77.93", "78.73", "10.77", "14.88", "2.24", "0.628", "0.514", "1.19", "1.51", "0.74",
                 "0.4387", "0.4668"),
    ],
    "docs/methods/ols.md": _quotes(MANY_ALL, "98.52 ± 0.06", "98.49 ± 0.05", "0.052", "3.367"),
    "docs/benchmarks/large_k.md": _quotes(MANY_ALL, "98.52 ± 0.06", "98.49 ± 0.05", "-0.036", "0.332", "0.052",
                                          "-3.367"),
    "docs/results/many-classes.md": [
        *_quotes(KAI_BASE, "24.50 ± 0.56", "-1.426", "1.480", "0.067", "-7.835", "2.356", "0.002", "13.97 ± 0.81",
                 "24.73 ± 0.49", "-1.195", "1.087", "0.058", "-7.604", "2.052", "0.001", "14.02 ± 0.27",
                 "32.34 ± 1.50", "+6.409", "3.023", "0.007", "+0.000", "1.903", "1.000", "9.19 ± 1.71", "23.32 ± 1.38",
                 "-2.602", "3.347", "0.086", "-9.011", "1.331", "0.000", "23.19 ± 1.38", "-2.345", "0.014"),
        *_quotes(KAI, "25.93 ± 0.89", "32.34 ± 0.90", "33.11 ± 0.87", "35.84 ± 0.94", "33.98 ± 1.03", "38.67 ± 1.05",
                 "-6.409", "2.455", "0.003", "+6.409", "+7.182", "2.374", "0.002", "+0.773", "0.915", "0.034",
                 "+9.915", "1.728", "0.000", "+3.506", "1.823", "0.006", "+8.056", "1.826", "0.001", "+1.647",
                 "1.499", "0.029", "+12.747", "1.994", "+6.339", "1.361", "30.02 ± 0.82", "11.53 ± 0.91",
                 "3.04 ± 0.48", "5.72 ± 1.04", "5.15 ± 1.21", "17.78 ± 1.06"),
        *_quotes(KAI_CAL, "51.34 ± 0.79", "56.76 ± 0.28", "58.46 ± 0.85", "61.97 ± 0.64", "58.84 ± 0.86",
                 "67.73 ± 0.73", "38.16 ± 0.86", "34.75 ± 1.60", "36.75 ± 1.37", "34.58 ± 1.02", "35.53 ± 1.82",
                 "35.58 ± 2.25", "+5.213", "0.320", "0.814", "0.884", "0.897"),
        *_quotes(MANY_ALL, "97.56 ± 0.13", "98.49 ± 0.05", "98.52 ± 0.06", "0.0919 ± 0.0016", "0.2173 ± 0.0004",
                 "0.2697 ± 0.0026", "1.91 ± 0.07", "14.74 ± 0.08", "18.10 ± 0.10", "+0.928", "+0.963", "0.351",
                 "0.435", "0.022", "-0.036", "0.332", "0.607", "-0.052", "-3.367"),
        *_quotes(MANY, "98.20 ± 0.25", "99.37 ± 0.03", "99.48 ± 0.03", "99.53 ± 0.13", "99.30 ± 0.13", "99.42 ± 0.06",
                 "99.27 ± 0.08", "99.42 ± 0.08", "99.55 ± 0.22", "97.92 ± 0.15", "98.05 ± 0.10", "99.27 ± 0.15",
                 "98.72 ± 0.28", "+1.167", "0.821", "+1.283", "0.899", "+1.333", "1.111", "+1.100", "1.177", "+1.217",
                 "0.984", "+1.067", "1.062", "0.997", "+1.350", "0.490", "0.094", "-0.283", "0.805", "-0.150",
                 "0.711", "1.087", "+0.517", "1.268", "+0.167", "0.340", "-0.067", "+0.050", "+0.183", "+0.117",
                 "0.88 ± 0.13", "0.0567 ± 0.0015", "17.45 ± 0.06", "0.2356 ± 0.0016", "9.49 ± 0.10",
                 "0.1205 ± 0.0028", "10.54 ± 0.30", "0.1393 ± 0.0021", "11.44 ± 0.11", "0.1460 ± 0.0024",
                 "5.65 ± 0.17", "0.1156 ± 0.0041", "29.07 ± 0.21", "0.4108 ± 0.0019", "98.34 ± 0.30",
                 "5.6826 ± 0.0646", "-7.960", "-6.912", "13.18"),
    ],
}


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8").replace("\u2212", "-")


def _occurs(figure: str, text: str) -> bool:
    """figure appears in text as a whole number: "2.66" does not match inside "2.667" or "12.66"."""
    return re.search(rf"(?<![\d.]){re.escape(figure)}(?!\d)", text) is not None


@pytest.mark.parametrize("page", sorted(QUOTED))
def test_quoted_figures_are_what_the_generated_pages_print(page: str) -> None:
    text = _text(ROOT / page)
    generated = {stem: _text(PAGES / f"{stem}.md") for stem in {stem for stem, _ in QUOTED[page]}}
    problems = [f"{page} no longer quotes {figure!r} (from docs/benchmarks/{stem}.md)"
                for stem, figure in QUOTED[page] if not _occurs(figure, text)]
    problems += [f"{page} quotes {figure!r}, which docs/benchmarks/{stem}.md no longer prints"
                 for stem, figure in QUOTED[page] if not _occurs(figure, generated[stem])]
    assert not problems, "\n".join(problems)


def test_quotes_come_from_pages_regenerated_from_data() -> None:
    stems = {stem for pairs in QUOTED.values() for stem, _ in pairs}
    assert stems <= set(CHECKED) | COMPANION_PAGES, \
        f"figures quoted from pages without committed data: {sorted(stems - set(CHECKED) - COMPANION_PAGES)}"


# Hand-written figures computed from a committed CSV column that no generated page prints: page -> (study, cells,
# column, figure). With one cell, "m ± s" is the mean ± sample std over its seeds, "mean: m" the mean alone and
# "seed N: x" one seed's value; with two cells (a, b), "+d" (or "d") is mean(a) - mean(b) and "lo-hi" the range of
# a - b paired by seed. Each at the figure's decimals.
OLS_CIFAR = "method=ols,ols_preset=paper-cifar"
SYMMETRIC = ("symmetric_0.2", "symmetric_0.4", "symmetric_0.6")


def _noisy(noise: str, method: str) -> str:
    return f"noise={noise},{method}"




def _validation_chosen_lead(*figures: str) -> list[tuple[str, tuple[str, str], str, str]]:
    """OLS `paper-cifar` - CE at the validation-chosen epoch under symmetric noise, a difference of means."""
    return [(NOISY, (_noisy(noise, OLS_CIFAR), _noisy(noise, "method=ce")), "best_top1", figure)
            for noise, figure in zip(SYMMETRIC, figures)]


FROM_CSV: dict[str, list[tuple[str, str | tuple[str, str], str, str]]] = {
    "docs/results/family-fashion-mnist.md": [
        *[(BN, "method=ce", column, figure) for column, figure in (
            ("top1_running", "80.76 ± 0.64"), ("top1_recomputed", "80.90 ± 1.04"), ("difference", "0.14 ± 0.55"),
            ("difference", "seed 0: -0.42"), ("difference", "seed 1: 0.17"), ("difference", "seed 2: 0.67"))],
        *[(FITTED, cell, "train_top1", "100.00 ± 0.00") for cell in (
            "method=ce", "method=ls,ls_eps=0.1", OLS_CIFAR, "method=ols,ols_preset=paper-fine-grained", "method=ols",
            "method=cskd", "method=pskd", "method=zipf", "method=maxsup")],
        (FITTED, "method=tfkd", "train_top1", "87.87 ± 0.77"),
    ],
    "docs/results/noisy-fashion-mnist.md": [
        *[(NOISY, "noise=-,method=ce", "train_top1", f"seed {seed}: {value}")
          for seed, value in ((0, "99.0"), (1, "99.3"), (2, "98.7"))],
        *[(NOISY, _noisy(noise, f"method=ols,ols_preset={preset}"), "ols_noise_mass", figure)
          for noise, preset, figure in (
              ("symmetric_0.2", "paper-cifar", "0.322 ± 0.005"),
              ("symmetric_0.2", "paper-fine-grained", "0.230 ± 0.004"),
              ("symmetric_0.4", "paper-cifar", "0.489 ± 0.010"),
              ("symmetric_0.4", "paper-fine-grained", "0.358 ± 0.002"),
              ("symmetric_0.6", "paper-cifar", "0.640 ± 0.003"),
              ("symmetric_0.6", "paper-fine-grained", "0.469 ± 0.006"),
              ("asymmetric_0.4", "paper-cifar", "0.214 ± 0.002"),
              ("asymmetric_0.4", "paper-fine-grained", "0.178 ± 0.003"))],
        *[(NOISY, _noisy(noise, OLS_CIFAR), "noise_source_mass", f"mean: {figure}") for noise, figure in (
            ("symmetric_0.2", "0.199"), ("symmetric_0.4", "0.400"), ("symmetric_0.6", "0.600"),
            ("asymmetric_0.4", "0.257"))],
        *[(NOISY, (_noisy(noise, OLS_CIFAR), _noisy(noise, "method=ce")), "top1", figure)
          for noise, figure in zip(SYMMETRIC, ("2.49-2.85", "7.23-8.87", "12.61-14.12"))],
        *[(NOISY, (_noisy(noise, "method=gce"), _noisy(noise, OLS_CIFAR)), column, figure)
          for column, figures in (("top1", ("1.20", "5.59", "14.74")), ("best_top1", ("0.68", "1.18", "1.83")))
          for noise, figure in zip(SYMMETRIC, figures)],
        *_validation_chosen_lead("+0.68", "+0.90", "+1.93"),
        (NOISY, (_noisy("asymmetric_0.4", OLS_CIFAR), _noisy("asymmetric_0.4", "method=ce")), "best_top1", "+1.48"),
    ],
    "docs/results/many-classes.md": [
        (KAI, ("method=cskd", "method=ols,ols_preset=paper-fine-grained"), "top1", "+2.83"),
        *[(MANY_ALL, cell, "epoch_time_s", f"seed {seed}: {figure}") for cell, figures in (
            ("method=ce", ("19.4", "21.5", "36.5")), ("method=ols", ("21.3", "20.5", "38.2")),
            ("method=ols,loss_options=__top_k__32_", ("25.1", "24.5", "38.4"))) for seed, figure in enumerate(figures)],
        *[(KAI, cell, "train_top1", "100.00 ± 0.00") for cell in (
            "method=ce", "method=ls,ls_eps=0.1", OLS_CIFAR, "method=ols,ols_preset=paper-fine-grained",
            "method=ols,loss_options=__top_k__32_", "method=cskd")],
    ],
    "README.md": _validation_chosen_lead("0.68", "0.90", "1.93"),
    "docs/results.md": [
        *[(NOISY, (_noisy(noise, OLS_CIFAR), _noisy(noise, "method=ce")), "best_top1", figure)
          for noise, figure in (("symmetric_0.2", "0.68"), ("symmetric_0.6", "1.93"))],
        (ACC, "model=small_cnn,method=ce", "train_top1", "85.52 ± 0.33"),
        (ACC, "model=small_cnn,method=ls,ls_eps=0.1", "train_top1", "85.33 ± 0.29"),
        (ACC, "model=small_cnn,method=ols,ols_preset=paper-cifar", "train_top1", "82.98 ± 0.09"),
        (ACC, "model=small_cnn,method=ols", "train_top1", "83.61 ± 0.20"),
        (ACC, "model=small_cnn,method=tfkd", "train_top1", "70.64 ± 0.48"),
        (ACC, "model=small_resnet,method=ce", "train_top1", "87.09 ± 0.21"),
        (ACC, "model=small_resnet,method=ls,ls_eps=0.1", "train_top1", "86.92 ± 0.19"),
        (ACC, "model=small_resnet,method=ols,ols_preset=paper-cifar", "train_top1", "84.79 ± 0.13"),
        (ACC, "model=small_resnet,method=ols", "train_top1", "85.19 ± 0.04"),
        (ACC, "model=small_resnet,method=tfkd", "train_top1", "67.35 ± 0.46"),
    ],
}


def _csv_figure(stem: str, cells: str | tuple[str, str], column: str, figure: str) -> str:
    """What the committed CSV gives for `figure`'s form (see FROM_CSV), at its decimals."""
    rows = list(csv.DictReader((PAGES / f"{stem}.csv").open(encoding="utf-8")))
    values = [{row["seed"]: float(row[column]) for row in rows if row["cell"] == cell}
              for cell in ((cells,) if isinstance(cells, str) else cells)]
    digits = len(re.split(r" ± |(?<=\d)-", figure)[0].rpartition(".")[2])
    if isinstance(cells, tuple):
        if re.fullmatch(r"[\d.]+-[\d.]+", figure):
            paired = [values[0][seed] - values[1][seed] for seed in values[0]]
            return f"{min(paired):.{digits}f}-{max(paired):.{digits}f}"
        difference = statistics.mean(values[0].values()) - statistics.mean(values[1].values())
        return f"{difference:{'+' if figure[0] in '+-' else ''}.{digits}f}"
    if figure.startswith("seed "):
        seed = figure.split(":")[0].removeprefix("seed ")
        return f"seed {seed}: {values[0][seed]:.{digits}f}"
    if figure.startswith("mean: "):
        return f"mean: {statistics.mean(values[0].values()):.{digits}f}"
    return f"{statistics.mean(values[0].values()):.{digits}f} ± {statistics.stdev(values[0].values()):.{digits}f}"


@pytest.mark.parametrize("page", sorted(FROM_CSV))
def test_figures_computed_from_csv_columns(page: str) -> None:
    text = _text(ROOT / page)
    problems = []
    for stem, cells, column, figure in FROM_CSV[page]:
        computed = _csv_figure(stem, cells, column, figure)
        if computed != figure:
            problems.append(f"{page}: {figure!r} for {cells} {column}, but {stem}.csv gives {computed!r}")
        if not _occurs(figure.rpartition(": ")[2], text):
            problems.append(f"{page} no longer quotes {figure!r} ({cells} {column})")
    assert not problems, "\n".join(problems)


def test_family_matrix_table_regenerates_from_its_csv() -> None:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    script = importlib.import_module("benchmarks.ols_matrices")
    study = load_study(resolve_study_path(FITTED))
    table = script.matrices_table(study, script.read_rows(study, PAGES / f"{FITTED}-soft-labels.csv"))
    assert table in _text(DOCS / "results" / "family-fashion-mnist.md")
