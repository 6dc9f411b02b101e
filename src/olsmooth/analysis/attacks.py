"""Adversarial attacks on tensors: FGSM and PGD (linf, l2; CE or margin loss; random starts and restarts) written
here, APGD, Square and AutoAttack's standard set through the optional `attacks` extra (torchattacks).

Inputs are images in pixel space [0, 1] and every adversarial image stays in the box [0, 1] and in the eps ball
around its clean image; `NormalizedModel` puts a dataset's channel repeat and normalisation inside the model so
that eps is measured in pixels. Nothing here knows a dataset or a checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UserInputError

NORMS = ("linf", "l2")
LOSSES = ("ce", "margin")
OWN_ATTACKS = ("fgsm", "pgd")
LIBRARY_ATTACKS = ("apgd-ce", "apgd-dlr", "square", "autoattack")
ATTACKS = OWN_ATTACKS + LIBRARY_ATTACKS
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


def min_classes(attack: str) -> int:
    """The fewest classes an attack works with (DLR divides by the gap to the third logit, targeted DLR the fourth)."""
    return {"apgd-dlr": 3, "autoattack": 4}.get(attack, 2)


def _standard_set(lib: Any, model: nn.Module, norm: str, eps: float, seed: int, num_classes: int) -> Any:
    """AutoAttack's standard set with its published settings: APGD-CE, APGD-T and FAB-T (100 iterations, 9 target
    classes) and Square (5000 queries), each run on the samples the ones before did not fool."""
    targets = min(AUTOATTACK_TARGETS, num_classes - 1)
    apgd_t = lib.APGDT(model, norm=norm, eps=eps, steps=AUTOATTACK_STEPS, seed=seed, n_classes=num_classes)
    fab_t = lib.FAB(model, norm=norm, eps=eps, steps=AUTOATTACK_STEPS, seed=seed, multi_targeted=True,
                    n_classes=num_classes)
    apgd_t.n_target_classes = fab_t.n_target_classes = targets
    return lib.MultiAttack([lib.APGD(model, norm=norm, eps=eps, steps=AUTOATTACK_STEPS, seed=seed, loss="ce"),
                            apgd_t, fab_t,
                            lib.Square(model, norm=norm, eps=eps, n_queries=AUTOATTACK_QUERIES, seed=seed)])


def library_attack(attack: str, model: nn.Module, images: Tensor, labels: Tensor, eps: float, norm: str = "linf",
                   steps: int = 100, restarts: int = 1, seed: int = 0, num_classes: int = 10) -> Tensor:
    """Run one of LIBRARY_ATTACKS with torchattacks on pixel images; `steps` are iterations for APGD and queries
    for Square (AutoAttack's standard set has its own). The global RNG is left as it was."""
    _check(eps, norm)
    lib = attacks_library(attack)
    if num_classes < min_classes(attack):
        raise UserInputError(f"attack {attack} needs at least {min_classes(attack)} classes, the model has "
                             f"{num_classes}")
    name = {"linf": "Linf", "l2": "L2"}[norm]
    if attack in ("apgd-ce", "apgd-dlr"):
        runner = lib.APGD(model, norm=name, eps=eps, steps=steps, n_restarts=restarts, seed=seed,
                          loss=attack.partition("-")[2])
    elif attack == "square":
        runner = lib.Square(model, norm=name, eps=eps, n_queries=steps, n_restarts=restarts, seed=seed,
                            loss="margin")
    elif attack == "autoattack":
        runner = _standard_set(lib, model, name, eps, seed, num_classes)
    else:
        raise UserInputError(f"unknown library attack {attack!r}; use one of {', '.join(LIBRARY_ATTACKS)}")
    devices = [images.device] if images.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        adversarial = runner(images, labels)
    return adversarial.detach().to(images.dtype)
