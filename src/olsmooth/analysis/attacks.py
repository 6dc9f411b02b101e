"""Adversarial attacks on tensors: FGSM and PGD (linf, l2; CE or margin loss; random starts and restarts) written
here, APGD, Square and AutoAttack's standard set through the optional `attacks` extra (torchattacks).

Every attack is registered once, by name, with its algorithm, a one-line help and the options it takes with their
defaults (`ATTACKS`, `register_attack`): `olsmooth attack`'s choices and help, the engine's attack loop and its
settings, the HTML report and the docs' check all read that one table.

Inputs are images in pixel space [0, 1] and every adversarial image stays in the box [0, 1] and in the eps ball
around its clean image; `NormalizedModel` puts a dataset's channel repeat and normalisation inside the model so
that eps is measured in pixels. Nothing here knows a dataset or a checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UserInputError

NORMS = ("linf", "l2")
LOSSES = ("ce", "margin")
ATTACKS_EXTRA = "olsmooth[attacks]"
STEP_SIZE_FACTOR = 2.5  # PGD's default step: 2.5 * eps / steps (Madry et al. 2018; the robustness library)
# AutoAttack's standard set (Croce and Hein 2020): iterations of APGD-CE, APGD-T and FAB-T, queries of Square,
# and the number of target classes of the targeted attacks.
AUTOATTACK_STEPS, AUTOATTACK_QUERIES, AUTOATTACK_TARGETS = 100, 5000, 9


class AttacksExtraMissing(UserInputError):
    """An attack of the optional `attacks` extra was asked for, and torchattacks is not installed."""

    def __init__(self, attack: str) -> None:
        super().__init__(f"attack {attack} needs the attacks extra: pip install '{ATTACKS_EXTRA}'")


class NormalizedModel(nn.Module):
    """`model` fed with pixel images: repeats the channels `repeat` times (grayscale data given to an RGB model),
    then normalises with the dataset's (already repeated) mean and std, as the data pipeline would."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float], repeat: int = 1) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} channels, std {len(std)}")
        self.model = model
        self.repeat = repeat
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, pixels: Tensor) -> Tensor:
        if self.repeat > 1:
            pixels = pixels.repeat(1, self.repeat, 1, 1)
        return self.model((pixels - self.mean) / self.std)


def to_pixels(images: Tensor, mean: Sequence[float], std: Sequence[float], repeat: int = 1) -> Tensor:
    """Undo the normalisation of a batch (and the channel repeat: the first copy is kept), clamped to [0, 1].

    The inverse of `NormalizedModel`'s input transform, so `NormalizedModel(m, mean, std, repeat)(to_pixels(x))`
    gives `m(x)` up to float rounding."""
    mean_t = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    pixels = images * std_t + mean_t
    return pixels[:, : pixels.shape[1] // repeat].clamp(0.0, 1.0)


# -- losses: per sample, larger means more adversarial -----------------------------------------------------------
def ce_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy of each sample, in float32."""
    return F.cross_entropy(logits.float(), labels, reduction="none")


def margin_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Carlini-Wagner margin max_{j != y} z_j - z_y of each sample: positive exactly when the sample is fooled."""
    logits = logits.float()
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf")).amax(dim=1)
    return others - true


_LOSS_FUNCTIONS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"ce": ce_loss, "margin": margin_loss}


def loss_function(name: str) -> Callable[[Tensor, Tensor], Tensor]:
    """The per-sample attack loss called `name` (one of LOSSES)."""
    if name not in _LOSS_FUNCTIONS:
        raise UserInputError(f"unknown attack loss {name!r}; use one of {', '.join(LOSSES)}")
    return _LOSS_FUNCTIONS[name]


# -- geometry of the threat model --------------------------------------------------------------------------------
def _per_sample(values: Tensor, like: Tensor) -> Tensor:
    """A (B,) tensor shaped to broadcast against a (B, ...) batch."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def _l2(delta: Tensor) -> Tensor:
    return delta.flatten(1).norm(dim=1)


def perturbation_size(clean: Tensor, adversarial: Tensor, norm: str) -> Tensor:
    """The linf or l2 norm of each sample's perturbation."""
    delta = (adversarial - clean).flatten(1)
    return delta.abs().amax(dim=1) if norm == "linf" else delta.norm(dim=1)


def project(clean: Tensor, adversarial: Tensor, eps: float, norm: str) -> Tensor:
    """Bring `adversarial` into the eps ball around `clean` (radial scaling for l2), then into the box [0, 1]."""
    delta = adversarial - clean
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        delta = delta * _per_sample((eps / _l2(delta).clamp_min(1e-12)).clamp(max=1.0), delta)
    return (clean + delta).clamp(0.0, 1.0)


def _ascent_direction(grad: Tensor, norm: str) -> Tensor:
    """The steepest ascent direction of unit norm: sign(g) for linf, g / ||g||_2 for l2 (zero where g is)."""
    if norm == "linf":
        return grad.sign()
    return grad / _per_sample(_l2(grad).clamp_min(1e-12), grad)


def _random_start(clean: Tensor, eps: float, norm: str, generator: torch.Generator | None) -> Tensor:
    """A point drawn uniformly from the eps ball around each image (then clipped to the box)."""
    device = generator.device if generator is not None else clean.device
    shape = clean.shape
    if norm == "linf":
        noise = (torch.rand(shape, generator=generator, device=device) * 2 - 1) * eps
    else:
        direction = torch.randn(shape, generator=generator, device=device)
        direction = direction / _per_sample(_l2(direction).clamp_min(1e-12), direction)
        radius = torch.rand(shape[0], generator=generator, device=device) ** (1.0 / clean[0].numel())
        noise = direction * _per_sample(radius * eps, direction)
    return project(clean, clean + noise.to(clean.device, clean.dtype), eps, norm)


def _check(eps: float, norm: str) -> None:
    if norm not in NORMS:
        raise UserInputError(f"unknown norm {norm!r}; use one of {', '.join(NORMS)}")
    if not eps >= 0:
        raise UserInputError(f"eps must be at least 0, got {eps}")


def _loss_and_gradient(model: nn.Module, images: Tensor, labels: Tensor, loss: Callable[[Tensor, Tensor], Tensor]
                       ) -> tuple[Tensor, Tensor]:
    """The gradient of the summed per-sample loss with respect to the images, and the logits (detached)."""
    images = images.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(images)
        (grad,) = torch.autograd.grad(loss(logits, labels).sum(), images)
    return grad, logits.detach()


# -- attacks -----------------------------------------------------------------------------------------------------
def fgsm(model: nn.Module, images: Tensor, labels: Tensor, eps: float, norm: str = "linf",
         loss: str = "ce") -> Tensor:
    """One step of size eps along the loss gradient's steepest ascent direction (FGSM for linf, FGM for l2)."""
    _check(eps, norm)
    grad, _ = _loss_and_gradient(model, images, labels, loss_function(loss))
    return project(images, images + eps * _ascent_direction(grad, norm), eps, norm).detach()


def default_step_size(eps: float, steps: int) -> float:
    """PGD's step when none is given: 2.5 * eps / steps, so the iterates can cross the ball from any start."""
    return STEP_SIZE_FACTOR * eps / steps


@torch.no_grad()
def _keep_worst(best: Tensor, best_score: Tensor, candidate: Tensor, score: Tensor) -> None:
    """Where `score` beats `best_score`, take the candidate images (in place)."""
    better = score > best_score
    best[better] = candidate[better]
    best_score[better] = score[better]


def pgd(model: nn.Module, images: Tensor, labels: Tensor, eps: float, norm: str = "linf", steps: int = 20,
        step_size: float | None = None, loss: str = "ce", restarts: int = 1, random_start: bool = True,
        generator: torch.Generator | None = None) -> Tensor:
    """Projected gradient ascent on the loss from a random point of the eps ball, `restarts` times.

    Returns, per sample, the worst case over every iterate of every restart, judged by the margin loss
    (a sample counts as fooled when any iterate fooled it), so more restarts or steps are never weaker.
    `generator` draws the random starts (one seeded generator gives reproducible attacks on any device).
    """
    _check(eps, norm)
    if steps < 1 or restarts < 1:
        raise UserInputError(f"PGD needs at least 1 step and 1 restart, got steps={steps}, restarts={restarts}")
    step = default_step_size(eps, steps) if step_size is None else step_size
    objective = loss_function(loss)
    best = images.detach().clone()
    best_score = torch.full((len(images),), float("-inf"), device=images.device)
    for _ in range(restarts):
        adv = _random_start(images, eps, norm, generator) if random_start else images.detach().clone()
        for _ in range(steps):
            grad, logits = _loss_and_gradient(model, adv, labels, objective)
            _keep_worst(best, best_score, adv, margin_loss(logits, labels))
            adv = project(images, adv + step * _ascent_direction(grad, norm), eps, norm)
        with torch.no_grad():
            _keep_worst(best, best_score, adv, margin_loss(model(adv), labels))
    return best


def large_eps(norm: str, image_shape: Sequence[int]) -> float:
    """An eps whose ball holds the whole box [0, 1]^d (1 for linf, sqrt(d) for l2): a working attack fools
    (nearly) every sample there."""
    if norm == "linf":
        return 1.0
    size = 1
    for side in image_shape:
        size *= int(side)
    return float(size) ** 0.5


# -- the registry ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AttackSettings:
    """One attack, validated (`olsmooth.engine.attack.attack_settings` builds it from the registry's defaults):
    `steps` (queries for square) and `restarts` are None where the algorithm fixes its budget (AutoAttack)."""

    attack: str
    norm: str
    eps: float
    eps_text: str
    steps: int | None
    restarts: int | None
    loss: str | None
    step_size: float | None
    seed: int = 0

    def describe(self) -> str:
        """One line: the attack, its eps and its budget."""
        entry = attack_entry(self.attack)
        parts = [f"{self.attack} {self.norm} eps {self.eps_text}"]
        if "steps" in entry.options:
            singular, plural = entry.unit
            parts.append(f"{self.steps} {singular if self.steps == 1 else plural}"
                         + (f" of {self.step_size:.4g}" if "step_size" in entry.options else ""))
        if self.restarts and self.restarts > 1:
            parts.append(f"{self.restarts} restarts")
        if self.loss:
            parts.append(f"{self.loss} loss")
        return ", ".join(parts)


Craft = Callable[[nn.Module, Tensor, Tensor, AttackSettings, Union[torch.Generator, None], int], Tensor]
"""An attack's algorithm: (pixel-space model, pixel images, labels, settings, generator of the random starts,
number of classes) -> adversarial images."""
OPTIONS = ("steps", "restarts", "loss", "step_size")
"""The options an attack may take (--steps, --restarts, --loss, --step-size); each entry declares its own."""


@dataclass(frozen=True)
class Attack:
    """A registered attack: its algorithm, a one-line help, and which of OPTIONS it takes with their defaults.

    `steps` is the budget's default (what it counts: `unit`), or what the name fixes when "steps" is not an option
    (FGSM: 1), or None where the algorithm fixes its whole budget; `restarts` the default number of random
    restarts (None with such a fixed budget); `loss` is the default of
    --loss where the attack takes it, else the loss the name fixes; `step_size(eps, steps)` is the step when none is
    given. `access`: "white-box" (the attacked model's gradients), "black-box" (its outputs only) or "both";
    `extra`: needs the attacks extra (torchattacks); `iterative`: False for a single-step attack (FGSM), which need
    not fool every image even where the ball holds the box, so the large-eps sanity check skips it; `versus_fgsm`:
    also scored under FGSM at the same eps (an iterative gradient attack must not be weaker)."""

    name: str
    help: str
    craft: Craft
    options: tuple[str, ...] = ()
    steps: int | None = None
    unit: tuple[str, str] = ("step", "steps")
    restarts: int | None = 1
    loss: str | None = None
    step_size: Callable[[float, int], float] | None = None
    access: str = "white-box"
    min_classes: int = 2
    extra: bool = False
    iterative: bool = True
    versus_fgsm: bool = False

    @property
    def white_box(self) -> bool:
        """Whether the attack uses the attacked model's gradients (so masked gradients can mislead it)."""
        return self.access != "black-box"

    def budget_text(self) -> str:
        """The default budget as the docs and --help show it: '20 steps', '5000 queries', 'fixed'."""
        return "fixed" if self.steps is None else f"{self.steps} {self.unit[0] if self.steps == 1 else self.unit[1]}"


ATTACKS: dict[str, Attack] = {}
"""Every attack by name, in the order --help and the docs list them."""


def register_attack(entry: Attack) -> Attack:
    """Make an attack available by name to `olsmooth attack`, the engine's loop, the report and the docs' check."""
    if entry.name in ATTACKS:
        raise ValueError(f"attack name {entry.name!r} is registered twice")
    unknown = set(entry.options) - set(OPTIONS)
    if unknown:
        raise ValueError(f"attack {entry.name} declares unknown options {sorted(unknown)}")
    ATTACKS[entry.name] = entry
    return entry


def attack_names() -> tuple[str, ...]:
    """The registered attacks' names, in registration order."""
    return tuple(ATTACKS)


def attack_entry(name: str) -> Attack:
    """The registered attack called `name`, or a one-line error listing the registered ones."""
    if name not in ATTACKS:
        raise UserInputError(f"unknown attack {name!r}; use one of {', '.join(ATTACKS)}")
    return ATTACKS[name]


def check_classes(entry: Attack, num_classes: int, what: str = "the model") -> None:
    """A one-line error when the attack needs more classes than `what` has (DLR divides by the gap to the third
    logit, targeted DLR by the gap to the fourth)."""
    if num_classes < entry.min_classes:
        raise UserInputError(f"attack {entry.name} needs at least {entry.min_classes} classes, {what} has "
                             f"{num_classes}")


def attack_images(model: nn.Module, images: Tensor, labels: Tensor, settings: AttackSettings,
                  generator: torch.Generator | None = None, num_classes: int = 10) -> Tensor:
    """The adversarial images of the attack `settings` names, crafted on `model` (a pixel-space model)."""
    entry = attack_entry(settings.attack)
    _check(settings.eps, settings.norm)
    check_classes(entry, num_classes)
    return entry.craft(model, images, labels, settings, generator, num_classes)


# -- attacks of the optional extra ------------------------------------------------------------------------------
def attacks_library(attack: str) -> Any:
    """The torchattacks module, or the one-line error naming the extra to install."""
    try:
        import torchattacks
    except ModuleNotFoundError as err:
        if (err.name or "").partition(".")[0] != "torchattacks":
            raise
        raise AttacksExtraMissing(attack) from None
    return torchattacks


_LIBRARY_NORMS = {"linf": "Linf", "l2": "L2"}
Runner = Callable[[Any, nn.Module, AttackSettings, int], Any]
"""Builds a torchattacks attack: (the torchattacks module, model, settings, number of classes) -> callable."""


def _library(build: Runner) -> Craft:
    """The algorithm of an attack torchattacks runs: built by `build`, run on pixel images with the global RNG
    left as it was."""
    def craft(model: nn.Module, images: Tensor, labels: Tensor, settings: AttackSettings,
              generator: torch.Generator | None, num_classes: int) -> Tensor:
        runner = build(attacks_library(settings.attack), model, settings, num_classes)
        devices = [images.device] if images.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            adversarial = runner(images, labels)
        return adversarial.detach().to(images.dtype)
    return craft


def _apgd(lib: Any, model: nn.Module, s: AttackSettings, num_classes: int) -> Any:
    return lib.APGD(model, norm=_LIBRARY_NORMS[s.norm], eps=s.eps, steps=s.steps, n_restarts=s.restarts,
                    seed=s.seed, loss=s.loss)


def _square(lib: Any, model: nn.Module, s: AttackSettings, num_classes: int) -> Any:
    return lib.Square(model, norm=_LIBRARY_NORMS[s.norm], eps=s.eps, n_queries=s.steps, n_restarts=s.restarts,
                      seed=s.seed, loss=s.loss)


def _standard_set(lib: Any, model: nn.Module, s: AttackSettings, num_classes: int) -> Any:
    """AutoAttack's standard set with its published settings: APGD-CE, APGD-T and FAB-T (100 iterations, 9 target
    classes) and Square (5000 queries), each run on the samples the ones before did not fool."""
    norm, targets = _LIBRARY_NORMS[s.norm], min(AUTOATTACK_TARGETS, num_classes - 1)
    apgd_t = lib.APGDT(model, norm=norm, eps=s.eps, steps=AUTOATTACK_STEPS, seed=s.seed, n_classes=num_classes)
    fab_t = lib.FAB(model, norm=norm, eps=s.eps, steps=AUTOATTACK_STEPS, seed=s.seed, multi_targeted=True,
                    n_classes=num_classes)
    apgd_t.n_target_classes = fab_t.n_target_classes = targets
    return lib.MultiAttack([lib.APGD(model, norm=norm, eps=s.eps, steps=AUTOATTACK_STEPS, seed=s.seed, loss="ce"),
                            apgd_t, fab_t,
                            lib.Square(model, norm=norm, eps=s.eps, n_queries=AUTOATTACK_QUERIES, seed=s.seed)])


# -- the attacks -------------------------------------------------------------------------------------------------
register_attack(Attack(
    "fgsm", "one step of size eps along the loss gradient's steepest ascent direction (FGSM; FGM for l2)",
    lambda model, images, labels, s, generator, classes: fgsm(model, images, labels, s.eps, s.norm, s.loss),
    options=("loss",), steps=1, loss="ce", step_size=lambda eps, steps: eps, iterative=False))
register_attack(Attack(
    "pgd", "projected gradient ascent from random points of the ball; the worst iterate of every restart is kept",
    lambda model, images, labels, s, generator, classes: pgd(model, images, labels, s.eps, s.norm, s.steps,
                                                             s.step_size, s.loss, s.restarts, generator=generator),
    options=OPTIONS, steps=20, loss="ce", step_size=default_step_size, versus_fgsm=True))
register_attack(Attack(
    "apgd-ce", "Auto-PGD on cross-entropy: step size adapted from the loss's progress, momentum",
    _library(_apgd), options=("steps", "restarts"), steps=100, loss="ce", extra=True))
register_attack(Attack(
    "apgd-dlr", "Auto-PGD on the Difference of Logits Ratio loss, invariant to shifting and scaling the logits",
    _library(_apgd), options=("steps", "restarts"), steps=100, loss="dlr", min_classes=3, extra=True))
register_attack(Attack(
    "square", "random search with square-shaped updates on the model's outputs alone, never its gradients",
    _library(_square), options=("steps", "restarts"), steps=5000, unit=("query", "queries"), loss="margin",
    access="black-box", extra=True))
register_attack(Attack(
    "autoattack", "AutoAttack's standard set: APGD-CE, APGD-T, FAB-T and Square, each on what the others left",
    _library(_standard_set), restarts=None, access="both", min_classes=4, extra=True))
