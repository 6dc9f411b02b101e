"""The `olsmooth` command: train, eval, ensemble, dataset-info, build-dataset, report, study, soft-labels and
attack (`COMMANDS`: one function per subcommand of `build_parser`)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from ._extras import toolkit_required
from .errors import UserInputError


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: a bad flag or value raises UserInputError (exit 2) instead of printing the
    usage block; `--help` still prints it. Subcommand parsers inherit the class."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("olsmooth").strip()
        raise UserInputError(f"{command + ': ' if command else ''}{message} (see {self.prog} --help)")


def _parse_loss_option(text: str) -> tuple[str, Any]:
    """KEY=VALUE with VALUE read as YAML, and as a number where YAML leaves one as text (1e-3); the loss's
    declarations check it later, so text that reads as nothing stays text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    import yaml
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        parsed = value
    if isinstance(parsed, str):
        from .engine.config import from_text
        parsed = from_text(float, parsed)
    return key.replace("-", "_"), parsed


def _flag(name: str) -> str:
    """The command-line flag of a configuration option (`data_root` -> `--data-root`)."""
    return "--" + name.replace("_", "-")


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, plus the loss-option aliases; only flags given on the command line reach the
    configuration. Values stay as typed (numbers where they read as one): the configuration checks them."""
    from .engine.config import OPTIONS, from_text
    from .losses import loss_options
    from .option_roles import LOSS_OPTION_ALIASES

    def help_of(option: Any, prefix: str = "") -> str:
        shown = [f"default: {option.shown_default()}"] + ([option.allowed()] if option.allowed() else [])
        return f"{prefix}{option.help} ({'; '.join(shown)})".replace("%", "%%")

    for name, option in OPTIONS.items():
        flag = _flag(name)
        if name in ("loss_options", "model_options"):
            parser.add_argument(f"--{name.split('_')[0]}-opt", dest=name, action="append", type=_parse_loss_option,
                                default=argparse.SUPPRESS, metavar="KEY=VALUE", help=help_of(option))
        elif option.kind is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                                help=help_of(option))
        else:
            kind = int if option.kind is list else option.kind
            parser.add_argument(flag, dest=name, nargs="*" if option.kind is list else None,
                                type=lambda text, kind=kind: from_text(kind, text), default=argparse.SUPPRESS,
                                help=help_of(option))
    for alias, (method, key) in LOSS_OPTION_ALIASES.items():
        option = next(o for o in loss_options(method) if o.name == key)
        parser.add_argument(_flag(alias), dest="loss_options", action="append",
                            type=lambda text, alias=alias, kind=option.kind: (alias, from_text(kind, text)),
                            default=argparse.SUPPRESS, metavar=key.upper(),
                            help=help_of(option, f"for method {method}, the same as --loss-opt {key}=VALUE: "))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="olsmooth", description="Online Label Smoothing toolkit.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model (defaults: digits, small_cnn, OLS)")
    train.add_argument("-c", "--config", help="YAML recipe: a path or the name of a shipped recipe")
    train.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last.pt")
    for what in ("recipes", "models", "datasets", "methods"):
        train.add_argument(f"--list-{what}", action="store_true", help=f"list the available {what} and exit")
    _add_config_flags(train)

    ev = sub.add_parser("eval", help="evaluate a checkpoint: top-1, top-5, NLL and calibration (ECE, adaptive ECE, "
                                     "MCE, classwise ECE, Brier) before and after temperature scaling")
    ev.add_argument("--checkpoint", required=True, help="a .pt file, or a run folder (its best.pt, else last.pt)")
    ev.add_argument("--ema", action="store_true", help="evaluate the EMA weights")
    ev.add_argument("--save-predictions", metavar="FILE.npz",
                    help="write probs (N, K) and labels (N,) of the whole test set and, when scaled, probs_ts of the "
                         "samples T was not fitted on with their positions, indices_ts")
    ev.add_argument("--calibration-data", default="auto", metavar="SPEC",
                    help="where the temperature is fitted: auto (the run's validation split, else test-fraction:0.5), "
                         "validation, test-fraction:F (a seeded stratified fraction F of the test set; the rest is "
                         "reported) or none (default: auto)")
    ev.add_argument("--seed", type=int, default=0, help="seed of the test fraction and of the shifts (default: 0)")
    ev.add_argument("--reliability", metavar="DIR", help="write reliability diagrams before and after temperature "
                                                         "scaling as DIR/STEM-reliability.png and -reliability-ts.png")
    ev.add_argument("--save-to-run", action="store_true",
                    help="also write the JSON result into the checkpoint's run folder as results/eval-STEM.json")
    ev.add_argument("--shift-consistency", action="store_true",
                    help="also measure how often the top-1 class survives two random circular shifts (Zhang 2019)")
    ev.add_argument("--max-shift", type=int, metavar="P",
                    help="with --shift-consistency: shifts of 0..P pixels (default: 4 per 32 pixels of image side)")
    _add_eval_flags(ev)

    ens = sub.add_parser("ensemble", help="evaluate the softmax average of several checkpoints")
    ens.add_argument("checkpoints", nargs="*", help="checkpoint files, or run folders (their best.pt, else last.pt)")
    ens.add_argument("--from-run", metavar="DIR", help="take snapshots from this run folder")
    ens.add_argument("--count", type=int, help="with --from-run: how many snapshots, spread uniformly")
    ens.add_argument("--after", type=int, default=0, metavar="EPOCH",
                     help="with --from-run: spread them over the epochs after this one only (default 0: all of "
                          "training), e.g. the first learning-rate decay, to ensemble near-converged snapshots")
    ens.add_argument("--save-predictions", metavar="FILE.npz", help="write probs (N, K) and labels (N,)")
    _add_eval_flags(ens)

    from .engine.config import OPTIONS
    info = sub.add_parser("dataset-info", help="count the train/test samples and classes of a dataset")
    info.add_argument("--dataset", required=True)
    info.add_argument("--data-root")
    info.add_argument("--split", choices=OPTIONS["split"].choices,
                      help=f"fine-grained sets only (default: {OPTIONS['split'].choices[0]})")
    info.add_argument("--json", action="store_true")

    from .data.glyphs import CHARSETS
    build = sub.add_parser("build-dataset", help="render printed characters from font files into a dataset split by "
                                                 "typeface (docs/datasets.md, glyphs)")
    build.add_argument("kind", choices=["glyphs"], help="what to build")
    build.add_argument("--out", required=True, help="the dataset folder to write (then --data-root DIR)")
    build.add_argument("--charset", choices=list(CHARSETS), help="default: gb2312-1")
    build.add_argument("--classes", type=int, metavar="K", help="a seeded subset of K characters (default: all)")
    build.add_argument("--fonts", action="append", metavar="PATH", help="a font file or folder, repeatable "
                                                                        "(default: every font fontconfig lists)")
    build.add_argument("--size", type=int, help="image side in pixels (default: 32)")
    build.add_argument("--copies", type=int, help="augmented copies per training glyph (default: 4)")
    build.add_argument("--test-groups", type=int, metavar="N", help="design groups drawn for the test split "
                                                                    "(default: 2)")
    build.add_argument("--test-group", action="append", dest="test_group_names", metavar="NAME",
                       help="a design group for the test split, repeatable (replaces --test-groups)")
    build.add_argument("--seed", type=int, help="seed of the class subset, the split and the augmentation "
                                                "(default: 0)")
    build.add_argument("--force", action="store_true", help="replace an existing dataset folder")
    build.add_argument("--dry-run", action="store_true", help="list the faces, groups and split; render nothing")

    rep = sub.add_parser("report", help="mean ± std over runs, grouped by the options that differ, with paired "
                                        "tests by seed")
    rep.add_argument("runs", nargs="+", help="run folders (folders that are not finished runs are skipped)")
    rep.add_argument("--which", choices=["best", "last"], default="last", help="which epoch of each run")
    rep.add_argument("--json", action="store_true", help="print one JSON object (summary, paired_tests)")
    rep.add_argument("--html", metavar="FILE", help="also write one self-contained HTML page: the table and tests, "
                                                    "training curves, reliability diagrams, soft labels and the "
                                                    "results/ of each run")

    study = sub.add_parser("study", help="run a grid of trainings (cells x seeds) from a study file, resumable; "
                                         "write results.csv, results.md, results.png")
    study.add_argument("-c", "--config", required=True, help="study YAML: a path or the name of a shipped study")
    study.add_argument("--seeds", nargs="+", type=int, help="seeds of every cell (replaces the file's seeds)")
    study.add_argument("--out", help="folder of the run folders and results (default runs/study-NAME)")
    study.add_argument("--dry-run", action="store_true", help="list the runs and their state; train nothing")
    study.add_argument("--publish", metavar="DOCS", help="then copy the results into a docs folder: "
                                                         "DOCS/benchmarks/NAME.csv (per-run data), NAME.md (the "
                                                         "page, regenerated from it), DOCS/figures/NAME-*.png")
    study.add_argument("--from-csv", metavar="CSV", help="print the page a results.csv regenerates (tables, "
                                                         "paired tests), or with --publish publish that CSV; "
                                                         "trains nothing")

    from .analysis.soft_labels import VIEWS
    soft = sub.add_parser("soft-labels", help="what OLS learned: per class the most similar classes, the diagonal "
                                              "mass and entropy of its soft label, and their means over the epochs")
    soft.add_argument("run", help="an OLS run folder (one with soft_labels/epoch-NNN.npy)")
    soft.add_argument("--epoch", type=int, help="the epoch to describe (default: the last saved)")
    soft.add_argument("--top", type=int, default=5, help="similar classes shown per class (default: 5)")
    soft.add_argument("--json", action="store_true", help="print one JSON object (classes, curves, means)")
    soft.add_argument("--figures", metavar="DIR", help="write the heatmap grid and the curves here as PNG")
    soft.add_argument("--epochs", type=int, nargs="+", metavar="N",
                      help="with --figures: the epochs of the heatmap grid (default: first, middle and last saved)")
    soft.add_argument("--view", choices=VIEWS, default="auto",
                      help="with --figures: the classes of the heatmaps: full, sorted by diagonal, clustered rows, "
                           "or top (the classes of the largest off-diagonal masses); auto: full up to 30 classes, "
                           "else clustered and top")

    from .analysis.attacks import ATTACKS, LOSSES, NORMS
    built_in, extra = ([name for name, entry in ATTACKS.items() if entry.extra == wanted] for wanted in (False, True))
    budgets = ", ".join(f"{name}: {entry.budget_text()}" for name, entry in ATTACKS.items()
                        if "steps" in entry.options)
    att = sub.add_parser("attack", help="clean and robust top-1 of a checkpoint under FGSM, PGD, APGD, Square, "
                                        "AutoAttack or a transfer attack; eps in pixel space [0, 1] "
                                        "(docs/robustness.md)")
    att.add_argument("--checkpoint", required=True, help="a .pt file, or a run folder (its best.pt, else last.pt)")
    att.add_argument("--attack", required=True, choices=list(ATTACKS),
                     help=f"{', '.join(built_in)} are built in; {', '.join(extra)} need the attacks extra "
                          "(torchattacks)")
    att.add_argument("--norm", choices=NORMS, default="linf", help="threat model (default: linf)")
    att.add_argument("--eps", required=True, help="radius in pixel space [0, 1]: a number or a fraction (8/255)")
    att.add_argument("--steps", type=int, help=f"the budget: iterations or queries (defaults {budgets})")
    att.add_argument("--restarts", type=int, help="random restarts; the worst case per sample is kept (default 1)")
    att.add_argument("--step-size", help="pgd's step (default 2.5 * eps / steps); a number or a fraction")
    att.add_argument("--loss", choices=LOSSES, help="fgsm and pgd: cross-entropy or the CW margin (default ce)")
    att.add_argument("--surrogate", metavar="PATH", help="craft the attack on this checkpoint (trained on the same "
                                                         "data) and evaluate it on --checkpoint: a transfer attack")
    att.add_argument("--n", type=int, help="attack the first N test samples (default: all)")
    att.add_argument("--batch-size", type=int, help="default: the checkpoint's training batch size")
    att.add_argument("--workers", type=int, default=0)
    att.add_argument("--device", help="cpu | cuda | cuda:N")
    att.add_argument("--data-root", help="read the test data from here instead of the run's data root")
    att.add_argument("--seed", type=int, default=0, help="seed of the random starts")
    att.add_argument("--check-sanity", action="store_true",
                     help="also attack at an eps whose ball holds every image; warn unless nearly all are fooled")
    att.add_argument("--json", action="store_true", help="print one JSON object (clean_top1, robust_top1, attack, "
                                                         "eps, norm, steps, restarts, n, surrogate, ...)")
    att.add_argument("--save-to-run", action="store_true",
                     help="write the JSON to the run folder's results/attack-ATTACK-NORM-EPS[-transfer].json")
    return parser


def _add_eval_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", help="read the evaluation data from here instead of the run's data root")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--device", help="cpu | cuda | cuda:N")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object (keys top1, top5, nll, ece; eval adds the calibration metrics)")


def cmd_train(args: argparse.Namespace) -> int:
    from .engine.config import FIELDS, build_config, load_recipe, resolve_recipe_path
    from .engine.trainer import Trainer, load_resume
    from .option_roles import SET_BY_RESUME
    if _print_lists(args):
        return 0
    overrides = {k: v for k, v in vars(args).items() if k in FIELDS}
    for key in ("loss_options", "model_options"):
        if key in overrides:
            overrides[key] = dict(overrides[key])
    if args.resume:
        ignored = (["-c"] if args.config else []) + [_flag(k) for k in SET_BY_RESUME if k in overrides]
        if ignored:
            raise UserInputError(f"--resume continues the run as it was configured: {', '.join(ignored)} "
                                 f"cannot be given with it")
        cfg, checkpoint = load_resume(Path(args.resume), overrides)
    else:
        recipe = load_recipe(resolve_recipe_path(args.config)) if args.config else None
        cfg, checkpoint = build_config(recipe, overrides), None
    trainer = Trainer(cfg, checkpoint)
    trainer.log(f"run folder: {trainer.out}")
    trainer.fit()
    return 0


def _print_lists(args: argparse.Namespace) -> bool:
    """Handle --list-recipes/models/datasets/methods; True when something was listed."""
    from .data import list_datasets
    from .engine.config import list_recipes
    from .losses import list_losses, loss_options
    from .models import list_models
    listed = False
    if args.list_recipes:
        for name, recipe in list_recipes().items():
            expected = recipe.get("expected_top1_error")
            err = f"paper top-1 error {expected:.2f}%" if expected is not None else ""
            print(f"{name:<40} {recipe.get('dataset', ''):<12} {recipe.get('model', ''):<22} "
                  f"{recipe.get('method', ''):<5} {err}")
        listed = True
    if args.list_models:
        print("\n".join(list_models("olsmooth")))
        print("(plus every torchvision classification model and every timm model: tv/NAME, timm/NAME)")
        listed = True
    if args.list_datasets:
        for name, description in list_datasets().items():
            print(f"{name:<16} {description}")
        listed = True
    if args.list_methods:
        for name, description in list_losses().items():
            print(f"{name:<16} {description}")
            for option in loss_options(name):
                print(f"    {option.name:<17} {option.kind.__name__:<5} {option.shown_default():<6} "
                      f"{option.allowed():<40} {option.help}")
        print("set them with --loss-opt KEY=VALUE (or loss_options: {KEY: VALUE} in a recipe)")
        listed = True
    return listed


def _report_evaluation(evaluation: Any, args: argparse.Namespace) -> None:
    """Print the metrics: the four of an Evaluation, all of a CalibratedEvaluation (--save-predictions is written
    while evaluating)."""
    from .analysis.metrics import EVALUATION_KEYS, METRICS, SCALED_KEYS
    from .engine.inference import CalibratedEvaluation
    calibrated = isinstance(evaluation, CalibratedEvaluation)
    m = evaluation.metrics
    if calibrated and evaluation.fit is not None and evaluation.fit.at_bound:
        print(f"olsmooth: note: the fitted temperature {m['temperature']:.4g} lies at an end of the search range "
              f"(the NLL may fall further beyond it)", file=sys.stderr)
    if args.json:
        print(json.dumps(m if calibrated else {k: m[k] for k in EVALUATION_KEYS}))
        return
    on = f"  on {m['samples']} test samples" if calibrated else ""
    print("  ".join(f"{k} {METRICS[k].text(m[k])}" for k in EVALUATION_KEYS) + on)
    if not calibrated:
        return
    print(f"temperature fitted on: {m['calibration_data']}")
    columns = {key: max(8, len(key) + 2) for key in SCALED_KEYS}  # each wide enough for its name
    print(" " * 20 + "".join(f"{name.replace('_', ' '):>{width}}" for name, width in columns.items()) + "  samples")
    rows = [("before scaling", "")] + ([(f"after T = {m['temperature']:.3f}", "_ts")] if "temperature" in m else [])
    for name, suffix in rows:
        cells = [METRICS[key].text(m[key + suffix]) for key in columns]
        print(f"{name:<20}" + "".join(f"{cell:>{width}}" for cell, width in zip(cells, columns.values()))
              + f"  {m['samples' + suffix]:>7}")
    if "shift_consistency" in m:
        print(f"shift consistency {m['shift_consistency']:.2f}% (two circular shifts of 0..{m['max_shift']} px "
              f"per image, seed {args.seed})")


def cmd_eval(args: argparse.Namespace) -> int:
    from .engine.inference import evaluate_calibrated, save_evaluation
    from .runs.checkpoints import checkpoint_path
    from .runs.results import results_folder
    path = checkpoint_path(args.checkpoint)
    folder = Path(args.reliability) if args.reliability else None
    if folder is not None and folder.exists() and not folder.is_dir():
        raise UserInputError(f"--reliability {folder}: not a folder")
    results = results_folder(path, required=args.save_to_run)
    evaluation = evaluate_calibrated([path], args.data_root, args.batch_size, args.workers, args.device,
                                     ema=args.ema, calibration_data=args.calibration_data,
                                     shift_consistency=args.shift_consistency, max_shift=args.max_shift,
                                     seed=args.seed, predictions=args.save_predictions)
    if not evaluation.is_main:
        return 0
    _report_evaluation(evaluation, args)
    if folder is not None:
        from .analysis.plots import plot_reliability_of
        plot_reliability_of(evaluation.reliability, folder / f"{path.stem}-reliability.png",
                            title="before temperature scaling")
        if evaluation.fit is not None:
            plot_reliability_of(evaluation.reliability_ts, folder / f"{path.stem}-reliability-ts.png",
                                title=f"after temperature scaling (T = {evaluation.fit.temperature:.3f})")
    if args.save_to_run:
        save_evaluation(results, path, evaluation, args.ema)
    return 0


def cmd_ensemble(args: argparse.Namespace) -> int:
    from .engine.inference import evaluate_checkpoints, pick_snapshots
    paths = list(args.checkpoints)
    if args.after and not args.from_run:
        raise UserInputError("--after needs --from-run DIR")
    if args.from_run:
        if args.count is None:
            raise UserInputError("--from-run needs --count N")
        paths += pick_snapshots(args.from_run, args.count, args.after)
    if not paths:
        raise UserInputError("give checkpoint files, or --from-run DIR --count N")
    evaluation = evaluate_checkpoints(paths, args.data_root, args.batch_size, args.workers, args.device,
                                      predictions=args.save_predictions)
    if not evaluation.is_main:  # under torchrun rank 0 prints and writes
        return 0
    if not args.json:
        print(f"ensemble of {len(paths)}: " + ", ".join(str(p) for p in paths))
    _report_evaluation(evaluation, args)
    return 0


def cmd_dataset_info(args: argparse.Namespace) -> int:
    from .data import dataset_info
    info = dataset_info(args.dataset, args.data_root, args.split)
    if args.json:
        print(json.dumps(info))
    else:
        extra = "".join(f", {v} {k.replace('_', ' ')}" for k, v in info.items()
                        if k not in ("train", "test", "classes"))
        print(f"{args.dataset}: {info['train']} train, {info['test']} test, {info['classes']} classes{extra}")
    return 0


def cmd_build_dataset(args: argparse.Namespace) -> int:
    from .data.glyphs import build_glyph_dataset, glyph_options, plan_glyph_dataset
    names = ("charset", "classes", "fonts", "size", "copies", "test_groups", "test_group_names", "seed")
    opts = glyph_options(args.out, force=args.force, **{name: getattr(args, name) for name in names})
    if args.dry_run:
        print("\n".join(plan_glyph_dataset(opts).describe()))
        return 0
    manifest = build_glyph_dataset(opts, log=lambda text: print(text, flush=True))
    counts = manifest["counts"]
    print(f"wrote {opts.out}: {manifest['charset']['classes']} classes, {counts['train']['images']} train images "
          f"({counts['train']['faces']} faces), {counts['test']['images']} test images ({counts['test']['faces']} "
          f"faces of {', '.join(manifest['split']['test_groups'])})")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .analysis.metrics import EVALUATION_KEYS
    from .analysis.report import (
        group_runs,
        load_finished_runs,
        markdown_report,
        one_factor_pairs,
        paired_rows,
        summary_rows,
    )
    def note(text: str) -> None:
        print(f"olsmooth: note: {text}", file=sys.stderr)

    runs = load_finished_runs(args.runs, note=note)
    groups = group_runs(runs, args.which)
    pairs = one_factor_pairs(groups)
    if args.html:
        from .analysis.html_report import write_html_report
        from .runs.checkpoints import checkpoint_class_names
        path = write_html_report(args.html, runs, args.which, checkpoint_class_names, note=note)
        print(f"olsmooth: wrote {path}", file=sys.stderr)
    if args.json:
        print(json.dumps({"summary": summary_rows(groups, EVALUATION_KEYS),
                          "paired_tests": paired_rows(groups, pairs)}))
    else:
        print(markdown_report(groups, EVALUATION_KEYS, pairs), end="")
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from .studies import describe_plan, load_study, markdown_text, plan_runs, publish, read_results_csv, run_study
    study = load_study(args.config, args.seeds)
    out = Path(args.out or Path("runs") / f"study-{study.name}")
    if args.from_csv and args.publish:
        for path in publish(study, out, args.publish, args.from_csv):
            print(f"wrote {path}")
        return 0
    if args.from_csv:
        print(markdown_text(study, read_results_csv(study, args.from_csv), out), end="")
        return 0
    if args.dry_run:
        plan = plan_runs(study, out)
        print("\n".join(describe_plan(plan)))
        left = sum(run.status.state != "done" for run in plan)
        print(f"{len(plan)} runs ({len(study.cells)} cells x {len(study.seeds)} seeds), {left} to train")
        return 0
    for path in run_study(study, out, log=lambda text: print(text, flush=True)):
        print(f"wrote {path}")
    for path in publish(study, out, args.publish) if args.publish else ():
        print(f"wrote {path}")
    return 0


def cmd_soft_labels(args: argparse.Namespace) -> int:
    from .analysis.soft_labels import soft_label_figures, soft_label_summary, summary_text
    from .runs.checkpoints import checkpoint_class_names
    from .runs.reader import soft_label_files
    run = Path(args.run)
    soft_label_files(run)  # a run without soft labels stops here, before a checkpoint is read
    if args.figures and Path(args.figures).exists() and not Path(args.figures).is_dir():
        raise UserInputError(f"--figures {args.figures}: exists and is not a folder")
    names = checkpoint_class_names(run)
    summary = soft_label_summary(run, args.epoch, args.top, names)
    if args.figures:
        for path in soft_label_figures(run, args.figures, args.epochs, args.view, names,
                                       {run.name: summary["curves"]}).values():
            print(f"wrote {path}", file=sys.stderr)
    print(json.dumps(summary) if args.json else summary_text(summary), end="\n" if args.json else "")
    return 0


def cmd_attack(args: argparse.Namespace) -> int:
    from .engine.attack import attack_settings, run_attack
    settings = attack_settings(args.attack, args.norm, args.eps, args.steps, args.restarts, args.loss,
                               args.step_size, args.seed)
    report = run_attack(args.checkpoint, settings, args.surrogate, args.n, args.batch_size, args.workers,
                        args.device, args.data_root, args.check_sanity, args.save_to_run)
    if not report.is_main:  # under torchrun rank 0 prints and writes
        return 0
    for line in report.warnings:
        print(f"olsmooth: warning: {line}", file=sys.stderr)
    r = report.record
    if args.json:
        print(json.dumps(r))
        return 0
    source = f", crafted on {r['surrogate']}" if r["surrogate"] else ""
    print(f"{settings.describe()}{source}; the first {r['n']} test samples of {r['checkpoint']}")
    extra = f"  (fgsm at the same eps {r['fgsm_top1']:.2f}%)" if r["fgsm_top1"] is not None else ""
    print(f"clean top1 {r['clean_top1']:.2f}%  robust top1 {r['robust_top1']:.2f}%{extra}")
    if r["large_eps"] is not None:
        print(f"at eps {r['large_eps']['eps']:.4g} (every image in the ball): robust top1 "
              f"{r['large_eps']['robust_top1']:.2f}%")
    return 0


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "ensemble": cmd_ensemble, "dataset-info": cmd_dataset_info,
            "build-dataset": cmd_build_dataset,
            "report": cmd_report, "study": cmd_study, "soft-labels": cmd_soft_labels, "attack": cmd_attack}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; bad input (and an I/O error, named with its file, or a missing package of the toolkit extra)
    gives a one-line message and exit code 2."""
    try:
        with toolkit_required():
            args = build_parser().parse_args(argv)
            return COMMANDS[args.command](args)
    except UserInputError as err:
        print(f"olsmooth: error: {err.line()}", file=sys.stderr)
        return 2
    except OSError as err:
        from .fileio import io_error
        print(f"olsmooth: error: {io_error(err.filename or '(unnamed file)', err, 'use').line()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("olsmooth: interrupted", file=sys.stderr)
        return 130
    except RuntimeError as err:
        from .engine.distributed import is_peer_failure
        if not is_peer_failure(err):
            raise
        print("olsmooth: error: another process of this torchrun job died or stopped answering within "
              f"--dist-timeout ({' '.join(str(err).split())[:160]})", file=sys.stderr)
        return 1
    finally:
        _leave_process_group()


def _leave_process_group() -> None:
    """Destroy the torchrun process group a command created (train, eval, ensemble, attack, ...), also after an
    error; nothing to do, and torch not imported, when no command set one up."""
    distributed = sys.modules.get(f"{__package__}.engine.distributed")
    if distributed is not None:
        distributed.teardown()


if __name__ == "__main__":
    sys.exit(main())
