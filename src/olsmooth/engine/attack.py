"""`olsmooth attack`: clean and robust top-1 of a checkpoint under a white-box, black-box or transfer attack, with
eps in pixel space [0, 1], sanity checks that expose broken attacks and gradient masking, and a result file in
the run folder.

The test images are taken out of the dataset's normalisation (and channel repeat) and the model gets it back
through `NormalizedModel`, so every attack perturbs the pixels the dataset holds and clamps them to [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from ..analysis.attacks import (
    ATTACKS,
    LOSSES,
    NORMS,
    OPTIONS,
    AttackSettings,
    NormalizedModel,
    attack_entry,
    attack_images,
    attacks_library,
    check_classes,
    large_eps,
    perturbation_size,
    project,
    to_pixels,
)
from ..data.transforms import RepeatChannels
from ..errors import UserInputError
from ..runs.checkpoints import checkpoint_path, load_checkpoint
from ..runs.layout import attack_result_name
from ..runs.results import read_results, results_folder, write_result
from .distributed import DistInfo, all_reduce_max, all_reduce_sum, setup
from .evaluate import batch_shards, check_loader_options
from .inference import data_for_checkpoint, model_from_checkpoint, same_data

LARGE_EPS_MAX_TOP1 = 2.0  # % of samples a working attack may leave robust when the eps ball holds the whole box
TOLERANCE = 1e-5  # float rounding allowed outside the eps ball and the box


def parse_eps(text: str, flag: str = "--eps") -> tuple[float, str]:
    """A non-negative number or fraction a/b ('8/255', '0.5', '1e-3') as (value, canonical text)."""
    parts = str(text).strip().split("/")
    try:
        values = [float(part) for part in parts]
    except ValueError:
        values = []
    if not 1 <= len(values) <= 2 or not all(math.isfinite(v) for v in values) or values[0] < 0 or \
            (len(values) == 2 and values[1] <= 0):
        raise UserInputError(f"{flag} must be a number or a fraction a/b of non-negative numbers (8/255), "
                             f"got {text!r}")
    value = values[0] / values[1] if len(values) == 2 else values[0]
    return value, "/".join(format(v, ".12g") for v in values)


def _not_for(attack: str, given: dict[str, Any]) -> None:
    """Refuse flags that the attack has no use for, rather than ignore them."""
    flags = [flag for flag, value in given.items() if value is not None]
    if flags:
        raise UserInputError(f"{', '.join(flags)} do{'es' if len(flags) == 1 else ''} not apply to attack {attack}")


def attack_settings(attack: str, norm: str, eps: str | float, steps: int | None = None, restarts: int | None = None,
                    loss: str | None = None, step_size: str | float | None = None, seed: int = 0) -> AttackSettings:
    """Validate an attack's options against what the registry declares for it and fill its defaults (PGD: 20
    steps of 2.5 * eps / steps, CE loss)."""
    entry = attack_entry(attack)
    if norm not in NORMS:
        raise UserInputError(f"unknown norm {norm!r}; use one of {', '.join(NORMS)}")
    if loss is not None and loss not in LOSSES:
        raise UserInputError(f"unknown attack loss {loss!r}; use one of {', '.join(LOSSES)}")
    value, text = parse_eps(eps) if isinstance(eps, str) else parse_eps(repr(float(eps)))
    for flag, number in (("--steps", steps), ("--restarts", restarts)):
        if number is not None and number < 1:
            raise UserInputError(f"{flag} must be at least 1, got {number}")
    given = dict(zip(OPTIONS, (steps, restarts, loss, step_size)))
    _not_for(attack, {"--" + name.replace("_", "-"): number for name, number in given.items()
                      if name not in entry.options})
    steps = steps or entry.steps
    if step_size is not None:
        size: float | None = parse_eps(str(step_size), "--step-size")[0]
    else:
        size = None if entry.step_size is None or steps is None else entry.step_size(value, steps)
    return AttackSettings(attack, norm, value, text, steps, restarts or entry.restarts, loss or entry.loss, size, seed)


def at_eps(settings: AttackSettings, eps: float) -> AttackSettings:
    """The same attack at another eps (a step size that follows eps, PGD's, scaled with it)."""
    rule = attack_entry(settings.attack).step_size
    step = rule(eps, settings.steps) if rule is not None and settings.steps is not None else settings.step_size
    return replace(settings, eps=eps, eps_text=format(eps, ".12g"), step_size=step)


def versus_fgsm(settings: AttackSettings) -> AttackSettings:
    """FGSM with the loss, norm, eps and seed of `settings`: the single step an iterative attack must beat."""
    return attack_settings("fgsm", settings.norm, settings.eps_text, loss=settings.loss, seed=settings.seed)


# -- the checkpoints and their pixel-space test data -------------------------------------------------------------
def channel_repeat(dataset: Dataset) -> int:
    """How many times the dataset's transform repeats the image channels (grayscale fed to RGB models), else 1."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    steps = getattr(getattr(dataset, "transform", None), "transforms", None) or []
    return next((step.channels for step in steps if isinstance(step, RepeatChannels)), 1)


@dataclass
class Subject:
    """A checkpoint ready to attack: its pixel-space model on the device and a loader over its first n test samples."""

    path: Path
    ckpt: dict[str, Any]
    model: NormalizedModel
    loader: DataLoader
    mean: tuple[float, ...]
    std: tuple[float, ...]
    repeat: int

    def pixels(self, images: Tensor) -> Tensor:
        """A batch of this checkpoint's normalised test images in pixel space [0, 1], native channels."""
        return to_pixels(images, self.mean, self.std, self.repeat)


def load_subject(path: Path, n: int | None, batch_size: int | None, workers: int, dist: DistInfo,
                 data_root: str | None = None) -> Subject:
    """Load a checkpoint, its network wrapped with the dataset's normalisation, and its first n test samples."""
    ckpt = load_checkpoint(path)
    bundle = data_for_checkpoint(ckpt, data_root)
    repeat = channel_repeat(bundle.test)
    model = NormalizedModel(model_from_checkpoint(ckpt), bundle.mean, bundle.std, repeat).to(dist.device).eval()
    model.requires_grad_(False)  # gradients are taken with respect to the images only
    count = len(bundle.test) if n is None else min(n, len(bundle.test))
    size = batch_size or int(ckpt["config"].get("batch_size") or 256)
    loader = batch_shards(Subset(bundle.test, range(count)), size, workers, dist)
    return Subject(path, ckpt, model, loader, tuple(bundle.mean), tuple(bundle.std), repeat)


# -- counting --------------------------------------------------------------------------------------------------
@dataclass
class Counts:
    """Per-sample outcomes summed over the batches."""

    n: int = 0
    clean: int = 0  # correct on the clean image
    adversarial: int = 0  # correct on the attack's image
    robust: int = 0  # correct on both: the adversary may also keep the clean image (delta = 0 is in the ball)
    fgsm: int = 0  # robust under FGSM at the same eps (PGD runs only)
    large: int = 0  # robust at the eps whose ball holds the whole box (--check-sanity)
    pipeline_mismatch: int = 0  # predicted differently in pixel space than by the evaluation pipeline
    outside: float = 0.0  # largest excess of a perturbation over eps or of a pixel over [0, 1]
    large_eps: float | None = None  # the eps of `large`

    def percent(self, count: int) -> float:
        return 100.0 * count / max(self.n, 1)

    def reduced(self, device: torch.device) -> Counts:
        """The counts of all processes: summed, `outside` the largest (a no-op in a single process)."""
        names = ("n", "clean", "adversarial", "robust", "fgsm", "large", "pipeline_mismatch")
        sums = all_reduce_sum(torch.tensor([getattr(self, k) for k in names], dtype=torch.float64, device=device))
        outside = all_reduce_max(torch.tensor([self.outside], dtype=torch.float64, device=device))
        return replace(self, **{k: int(v) for k, v in zip(names, sums.tolist())}, outside=float(outside))


def _correct(model: torch.nn.Module, images: Tensor, labels: Tensor) -> Tensor:
    with torch.no_grad():
        return model(images).argmax(dim=1) == labels


def _outside(clean: Tensor, adversarial: Tensor, eps: float, norm: str) -> float:
    """How far the attack's images leave the eps ball or the box (0 when they do not)."""
    over = (perturbation_size(clean, adversarial, norm) - eps).max().item()
    box = max(-adversarial.min().item(), adversarial.max().item() - 1.0)
    return max(over, box, 0.0)


def _robust(settings: AttackSettings, crafter: torch.nn.Module, target: torch.nn.Module, pixels: Tensor,
            labels: Tensor, clean_ok: Tensor, generator: torch.Generator, num_classes: int) -> int:
    """Samples still correct on the target under `settings` crafted on `crafter`."""
    adversarial = project(pixels, attack_images(crafter, pixels, labels, settings, generator, num_classes),
                          settings.eps, settings.norm)
    return int((clean_ok & _correct(target, adversarial, labels)).sum())


# -- the command --------------------------------------------------------------------------------------------------
@dataclass
class AttackReport:
    """The result object (as `--json` prints and results/ keeps it), the sanity checks that failed, and whether
    this process prints and writes it (rank 0 under torchrun)."""

    record: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    is_main: bool = True


def result_name(settings: AttackSettings, transfer: bool) -> str:
    """results/ file name of this attack (`runs.layout.attack_result_name`)."""
    return attack_result_name(settings.attack, settings.norm, settings.eps_text, transfer)


def _check_options(settings: AttackSettings, surrogate: str | Path | None, n: int | None, batch_size: int | None,
                   workers: int) -> None:
    if n is not None and n < 1:
        raise UserInputError(f"--n must be at least 1, got {n}")
    check_loader_options(batch_size, workers)
    entry = attack_entry(settings.attack)
    if surrogate is not None and not entry.white_box:
        raise UserInputError(f"{entry.name} is a black-box attack on the target itself; --surrogate does not apply")
    if entry.extra:
        attacks_library(settings.attack)  # the missing extra is reported before anything is loaded


def run_attack(checkpoint: str | Path, settings: AttackSettings, surrogate: str | Path | None = None,
               n: int | None = None, batch_size: int | None = None, workers: int = 0, device: str | None = None,
               data_root: str | None = None, check_sanity: bool = False, save_to_run: bool = False) -> AttackReport:
    """Attack the first n test samples of a checkpoint (crafted on `surrogate` when given) and check the result."""
    path = checkpoint_path(checkpoint)
    _check_options(settings, surrogate, n, batch_size, workers)
    results = results_folder(path, required=save_to_run)
    saved = _saved_results(results, result_name(settings, surrogate is not None))  # a broken file stops us here
    dist = setup(device)
    target = load_subject(path, n, batch_size, workers, dist, data_root)
    num_classes = int(target.ckpt["num_classes"])
    check_classes(attack_entry(settings.attack), num_classes, str(path))
    source = None
    if surrogate is not None:
        source_path = checkpoint_path(surrogate)
        source = load_subject(source_path, n, target.loader.batch_size, workers, dist, data_root)
        same_data(target.ckpt, source.ckpt, source_path)
    counts = _attack_batches(settings, target, source, num_classes, dist, check_sanity)
    record = _record(settings, target, source, counts)
    report = AttackReport(record, sanity_warnings(settings, counts, record), is_main=dist.is_main)
    report.warnings += masking_warnings([*saved, record])
    record["warnings"] = report.warnings
    if save_to_run and results is not None and dist.is_main:
        write_result(results, result_name(settings, source is not None), record)
    return report


def _attack_batches(settings: AttackSettings, target: Subject, source: Subject | None, num_classes: int,
                    dist: DistInfo, check_sanity: bool) -> Counts:
    counts, entry = Counts(), attack_entry(settings.attack)
    single_step = versus_fgsm(settings) if entry.versus_fgsm else None
    crafter = (source or target).model
    batches = zip(target.loader, source.loader) if source else ((batch, batch) for batch in target.loader)
    for k, ((images, labels), (source_images, source_labels)) in enumerate(batches):
        # the random starts of batch b come from (seed, b), drawn on the CPU: the same on any device and any
        # number of processes; the sanity check's from their own generator, so it changes nothing else
        generator, check_generator = (torch.Generator().manual_seed(batch_seed(settings.seed + extra,
                                                                               dist.rank + k * dist.world_size))
                                      for extra in (0, 1))
        images, labels = images.to(dist.device), labels.to(dist.device)
        pixels = target.pixels(images)
        if source is not None:
            _same_pixels(pixels, labels, source.pixels(source_images.to(dist.device)), source_labels.to(dist.device),
                         source.path)
        clean_ok = _correct(target.model, pixels, labels)
        counts.pipeline_mismatch += int((clean_ok != _correct(target.model.model, images, labels)).sum())
        raw = attack_images(crafter, pixels, labels, settings, generator, num_classes)
        counts.outside = max(counts.outside, _outside(pixels, raw, settings.eps, settings.norm))
        adv_ok = _correct(target.model, project(pixels, raw, settings.eps, settings.norm), labels)
        counts.n += len(labels)
        counts.clean += int(clean_ok.sum())
        counts.adversarial += int(adv_ok.sum())
        counts.robust += int((clean_ok & adv_ok).sum())
        if single_step is not None:
            counts.fgsm += _robust(single_step, crafter, target.model, pixels, labels, clean_ok, generator,
                                   num_classes)
        if check_sanity and entry.iterative:
            big = large_eps(settings.norm, pixels.shape[1:])
            counts.large_eps = big
            counts.large += _robust(at_eps(settings, big), crafter, target.model, pixels, labels, clean_ok,
                                    check_generator, num_classes)
    return counts.reduced(dist.device)


def batch_seed(seed: int, batch: int) -> int:
    """The seed of batch `batch`'s random starts under `--seed seed`."""
    return (seed * 1_000_003 + batch) % 2**63


def _same_pixels(pixels: Tensor, labels: Tensor, other: Tensor, other_labels: Tensor, path: Path) -> None:
    """The surrogate must see the very test images of the target (same dataset, split, image size, order)."""
    if other.shape != pixels.shape or not torch.equal(other_labels, labels) or \
            not torch.allclose(other, pixels, atol=1e-4):
        raise UserInputError(f"the surrogate {path} sees other test images than the target (dataset, split, image "
                             f"size or channels differ)")


def _record(settings: AttackSettings, target: Subject, source: Subject | None, counts: Counts) -> dict[str, Any]:
    s = asdict(settings)
    large = None if counts.large_eps is None else {"eps": counts.large_eps, "robust_top1": counts.percent(counts.large)}
    return {
        "command": "attack",
        "checkpoint": str(target.path),
        "clean_top1": counts.percent(counts.clean),
        "robust_top1": counts.percent(counts.robust),
        "adversarial_top1": counts.percent(counts.adversarial),
        "attack": s["attack"], "eps": s["eps"], "eps_text": s["eps_text"], "norm": s["norm"], "steps": s["steps"],
        "restarts": s["restarts"], "loss": s["loss"], "step_size": s["step_size"], "seed": s["seed"],
        "n": counts.n,
        "surrogate": None if source is None else str(source.path),
        "fgsm_top1": counts.percent(counts.fgsm) if attack_entry(settings.attack).versus_fgsm else None,
        "large_eps": large,
    }


# -- sanity checks -------------------------------------------------------------------------------------------------
def sanity_warnings(settings: AttackSettings, counts: Counts, record: dict[str, Any]) -> list[str]:
    """One line for each check that failed (Carlini et al. 2019, "On evaluating adversarial robustness")."""
    found = []
    if counts.pipeline_mismatch:
        found.append(f"{counts.pipeline_mismatch} of {counts.n} clean samples are classified differently in pixel "
                     f"space than by the evaluation pipeline: the normalisation wrap does not match the data")
    if counts.outside > TOLERANCE:
        found.append(f"attack {settings.attack} returned images up to {counts.outside:.3g} outside the eps ball or "
                     f"[0, 1]; they were projected back before scoring")
    clean, adversarial = record["clean_top1"], record["adversarial_top1"]
    if settings.eps == 0 and adversarial != clean:
        found.append(f"at eps 0 the attack changed the top-1 ({clean:.2f}% clean, {adversarial:.2f}% attacked)")
    if adversarial > clean:
        found.append(f"the attacked images are classified correctly more often than the clean ones "
                     f"({adversarial:.2f}% > {clean:.2f}%): the attack does not maximise the loss")
    if record["fgsm_top1"] is not None and record["robust_top1"] > record["fgsm_top1"]:
        found.append(f"PGD leaves more samples robust than FGSM at the same eps ({record['robust_top1']:.2f}% > "
                     f"{record['fgsm_top1']:.2f}%): PGD is not converging (more steps or restarts), or the "
                     f"gradients are masked")
    large = record["large_eps"]
    if large is not None and large["robust_top1"] > LARGE_EPS_MAX_TOP1:
        found.append(f"at eps {large['eps']:.4g}, whose ball holds every image, {large['robust_top1']:.2f}% stay "
                     f"robust (a working attack fools nearly all): likely gradient masking or a broken attack")
    return found


def _saved_results(results: Path | None, replaced: str) -> list[dict[str, Any]]:
    """The attack results saved in a run folder's results/ (read under `runs.results`' rule), less the file this
    result would replace."""
    if results is None:
        return []
    return [r.data for r in read_results(results.parent, "attack") if r.path.name != replaced]


def _is_white_box(record: dict[str, Any]) -> bool:
    entry = ATTACKS.get(str(record.get("attack")))
    return record.get("surrogate") is None and entry is not None and entry.white_box


def masking_warnings(records: list[dict[str, Any]]) -> list[str]:
    """Flag a black-box or transfer attack that leaves fewer samples robust than the strongest white-box attack on
    the same checkpoint, samples, norm and eps: the white-box gradients are likely masked (Athalye et al. 2018)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        try:
            key = (Path(str(r["checkpoint"])).name, r["norm"], round(float(r["eps"]), 12), int(r["n"]))
            float(r["robust_top1"])
        except (KeyError, TypeError, ValueError):
            continue
        groups.setdefault(key, []).append(r)
    found = []
    for (_, norm, _, _), group in groups.items():
        white = [r for r in group if _is_white_box(r)]
        other = [r for r in group if not _is_white_box(r)]
        if not white or not other:
            continue
        best_white = min(white, key=lambda r: float(r["robust_top1"]))
        best_other = min(other, key=lambda r: float(r["robust_top1"]))
        if float(best_other["robust_top1"]) < float(best_white["robust_top1"]):
            how = "transfer from " + str(best_other["surrogate"]) if best_other.get("surrogate") else "black-box"
            found.append(f"likely gradient masking: {best_other['attack']} ({how}) leaves "
                         f"{float(best_other['robust_top1']):.2f}% robust at {norm} eps {best_other.get('eps_text')}, "
                         f"below white-box {best_white['attack']}'s {float(best_white['robust_top1']):.2f}%")
    return found
