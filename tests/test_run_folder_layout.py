"""One owner of the run folder: its file names are spelled in `olsmooth.runs` only, and the two rules every reader
follows (which checkpoint a run folder means; how results/ is read) hold for the CLI and the Python API alike."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import torch

from olsmooth.errors import UserInputError
from olsmooth.runs.checkpoints import checkpoint_class_names, checkpoint_path, load_checkpoint, save_checkpoint
from olsmooth.runs.results import read_results

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "src" / "olsmooth" / "runs"

# -- the names are spelled in runs/ only --------------------------------------------------------------------------
# a run folder's file names, as they would appear in a string anywhere in the code (f-string values read as {})
NAMED = re.compile(r"(?<![\w-])(config\.yaml|metrics\.jsonl|summary\.json|last\.pt|best\.pt|noise\.json|"
                   r"transition\.json|memorisation\.png|(clean|noisy)_labels\.npy|(train|val)_indices\.npy|"
                   r"transition-estimate|\.olsmooth-replac|epoch-(\{\}|\*|NNN|\(|\d)|(eval|attack)-\S*\.json|"
                   r"(results|soft_labels|tensorboard)/)")
# folder names that are also ordinary words (a dict key, a package name): flagged where they build a path
FOLDERS = {"results", "soft_labels", "tensorboard", ".lock", "transition-estimate"}
PATH_CALLS = {"Path", "glob", "rglob", "joinpath", "with_name", "join"}
ALLOWED = {"MEMORISATION_FIGURE": "the study's own figure beside results.csv (OUT/memorisation.png), not a run's"}


def _text(node: ast.AST) -> str | None:
    """A string literal's text; an f-string's with each value as {}."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(part.value if isinstance(part, ast.Constant) else "{}" for part in node.values)
    return None


def _skipped(tree: ast.AST) -> set[int]:
    """Literals that document rather than name a file: docstrings (of modules, classes, functions and constants),
    help texts (argparse's help=, a field's {"help": ...}), constants in ALLOWED, and the parts of an f-string
    (read whole)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            skipped.add(id(node.value))
        elif isinstance(node, ast.keyword) and node.arg == "help":
            skipped |= {id(n) for n in ast.walk(node.value)}
        elif isinstance(node, ast.Dict):
            skipped |= {id(n) for key, value in zip(node.keys, node.values)
                        if isinstance(key, ast.Constant) and key.value == "help" for n in ast.walk(value)}
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id in ALLOWED for t in node.targets):
            skipped.add(id(node.value))
        elif isinstance(node, ast.JoinedStr):
            skipped |= {id(n) for n in node.values}
    return skipped


def _path_parts(tree: ast.AST) -> set[int]:
    """Literals that build a path: an operand of `/`, or an argument of Path(), glob(), joinpath(), ..."""
    parts = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            parts |= {id(node.left), id(node.right)}
        elif isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if name in PATH_CALLS:
                parts |= {id(arg) for arg in node.args}
    return parts


def run_folder_literals(path: Path, root: Path = ROOT) -> list[str]:
    """`FILE:LINE: text` (FILE relative to `root`) for each literal in a Python file that spells a run folder's
    file name."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped, parts = _skipped(tree), _path_parts(tree)
    found = []
    for node in ast.walk(tree):
        text = None if id(node) in skipped else _text(node)
        if text is not None and (NAMED.search(text) or (id(node) in parts and text in FOLDERS)):
            found.append((node.lineno, f"{path.relative_to(root)}:{node.lineno}: {text!r}"))
    return [hit for _, hit in sorted(found)]


def test_the_scan_finds_what_it_looks_for(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text('"""Docs may say last.pt."""\n'
                      'a = run / "last.pt"\n'
                      'b = run / "results"\n'
                      'c = {"results": []}\n'
                      'd = f"epoch-{n:03d}.pt"\n'
                      'e = parser.add_argument("--x", help="its best.pt")\n'
                      'FIELD = {"help": "write epoch-NNN.pt snapshots"}\n'
                      'f = run.glob("epoch-*.pt")\n'
                      'g = results / f"eval-{stem}.json"\n'
                      'MEMORISATION_FIGURE = "memorisation.png"\n')
    assert [line.split(": ", 1)[1] for line in run_folder_literals(sample, tmp_path)] == [
        "'last.pt'", "'results'", "'epoch-{}.pt'", "'epoch-*.pt'", "'eval-{}.json'"]


def test_run_folder_file_names_are_spelled_only_in_runs():
    files = [*(ROOT / "src" / "olsmooth").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py")]
    found = [hit for path in sorted(files) if RUNS not in path.parents for hit in run_folder_literals(path)]
    assert found == [], "run-folder file names outside olsmooth.runs (use olsmooth.runs.layout):\n" + "\n".join(found)


def test_runs_imports_neither_the_engine_nor_the_analysis():
    """engine, analysis -> runs (DESIGN.md): the run folder's owner sits below both."""
    imported = set()
    for path in RUNS.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                package = "olsmooth" if node.level == 2 else "olsmooth.runs" if node.level == 1 else ""
                imported.add(".".join(filter(None, [package, node.module])))
            elif isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
    assert not {name for name in imported if name.startswith(("olsmooth.engine", "olsmooth.analysis"))}
    assert "olsmooth.fileio" in imported  # the scan sees the package's own imports


# -- which checkpoint a run folder means --------------------------------------------------------------------------
def write_checkpoint(path: Path, epoch: int) -> None:
    """A checkpoint with the entries every checkpoint holds, telling its epoch and (as its class names) its file."""
    save_checkpoint(path, {"model": {"w": torch.zeros(1)}, "config": {}, "num_classes": 1, "channels": 1,
                           "epoch": epoch, "class_names": [path.stem]})


def test_a_run_folder_means_its_best_pt_else_its_last_pt_for_every_reader(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    write_checkpoint(run / "best.pt", 2)
    write_checkpoint(run / "last.pt", 3)  # the run went on after its best epoch
    assert checkpoint_path(run) == run / "best.pt"
    assert load_checkpoint(run)["epoch"] == 2  # what eval and attack evaluate is what ensemble and the API load
    assert checkpoint_class_names(run) == ["best"]
    assert checkpoint_path(run / "last.pt") == run / "last.pt"  # a file is taken as given
    (run / "best.pt").unlink()
    assert checkpoint_path(run) == run / "last.pt" and load_checkpoint(run)["epoch"] == 3
    (run / "last.pt").unlink()
    assert checkpoint_class_names(run) is None
    with pytest.raises(UserInputError, match="checkpoint not found"):
        load_checkpoint(run)


# -- results/ -----------------------------------------------------------------------------------------------------
def test_results_are_json_objects_read_in_name_order_and_a_broken_one_is_named(tmp_path):
    results = tmp_path / "run" / "results"
    results.mkdir(parents=True)
    (results / "eval-best.json").write_text(json.dumps({"command": "eval", "top1": 90.0}), encoding="utf-8")
    (results / "attack-pgd-linf-8_255.json").write_text(json.dumps({"command": "attack"}), encoding="utf-8")
    (results / "predictions.npz").write_bytes(b"not a result")
    assert [r.path.name for r in read_results(results.parent)] == ["attack-pgd-linf-8_255.json", "eval-best.json"]
    assert [r.data["top1"] for r in read_results(results.parent, "eval")] == [90.0]
    assert read_results(tmp_path / "elsewhere") == []
    (results / "notes.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(UserInputError, match=r"notes\.json: expected a JSON object"):
        read_results(results.parent, "eval")  # whatever the command asked for: the folder holds a broken result
