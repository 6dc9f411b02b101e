"""Studies: grids of training runs x seeds from one YAML file, and their tables, figures and published pages.

They stand above the engine (which trains each run) and the analysis (which reads, tests and draws the runs):
`spec` reads and checks the study file, `plan` says where each run goes and how far it got, `runner` trains what
is missing, `results` writes results.csv / results.md / results.png, and `publish` copies them into a docs folder.
"""

from .plan import PlannedRun, describe_plan, plan_runs
from .publish import publish, published_page_difference
from .results import markdown_text, read_results_csv, write_results
from .runner import run_study
from .spec import Cell, Study, load_study, resolve_study_path, studies_dir

__all__ = [
    "Cell", "PlannedRun", "Study", "describe_plan", "load_study", "markdown_text", "plan_runs", "publish",
    "published_page_difference", "read_results_csv", "resolve_study_path", "run_study", "studies_dir",
    "write_results",
]
