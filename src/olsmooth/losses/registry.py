"""Losses by name, each with its declared options, so recipes and the command line can pick and check them.

`build_loss("ols", num_classes=K, momentum=0.5)` checks every option against what the loss declares (name,
type, range) and turns a constructor's ValueError into a one-line `UserInputError`.
"""

from __future__ import annotations

import difflib
import math
import re
import typing
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import UserInputError
from .adaptive import MaxSuppression, Schedule, ZipfLabelSmoothing
from .common import CrossEntropy, EpochLoss
from .correction import BackwardCorrection, ForwardCorrection
from .elr import ELR
from .elr import PRESETS as ELR_PRESETS
from .noisy import SCE_PRESETS, Bootstrapping, DisturbLabel, GeneralizedCrossEntropy, SymmetricCrossEntropy
from .online import PRESETS, EmptyRule, Init, OnlineLabelSmoothing
from .regularised import JointOptimization, PairwiseConfusion
from .selfkd import ClassWiseSelfKD, ProgressiveSelfKD, StoreDtype
from .smoothing import LabelSmoothingCrossEntropy, TfKDRegularization

_KIND_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string", dict: "a mapping",
               list: "a list of integers"}


def did_you_mean(word: str, known: typing.Iterable[str]) -> str:
    """'; did you mean 'x'?' for the closest known word, or ''."""
    close = difflib.get_close_matches(word, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


@dataclass(frozen=True)
class Option:
    """A declared option: type, default, allowed values and help. `check` returns the value in the declared type
    or raises a one-line UserInputError naming the option, the value and what is allowed.

    `kind` is int, float, str, bool, dict or list (a list of integers, each within the range); `default_text` says
    what an unset (None) default means, for --help.
    """

    name: str
    kind: type
    default: Any = None
    help: str = ""
    choices: tuple[Any, ...] = ()
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    max_exclusive: bool = False
    pattern: str | None = None
    nullable: bool = False
    default_text: str = ""

    def shown_default(self) -> str:
        """The default as --help and --list-methods show it: `default_text`, 'none' when unset, on/off for switches."""
        if self.default_text:
            return self.default_text
        if isinstance(self.default, bool):
            return "on" if self.default else "off"
        return "none" if self.default in (None, [], {}) else _number(self.default)

    def allowed(self) -> str:
        """What the option accepts, as shown by --help and --list-methods: 'one of a, b', '> 0', '[0, 1)' (a pattern
        is left to the help text)."""
        if self.choices:
            return "one of " + ", ".join(map(str, self.choices))
        low, high = _number(self.min), _number(self.max)
        if self.min is not None and self.max is not None:
            return f"{'(' if self.min_exclusive else '['}{low}, {high}{')' if self.max_exclusive else ']'}"
        if self.min is not None:
            return f"{'>' if self.min_exclusive else '>='} {low}"
        if self.max is not None:
            return f"{'<' if self.max_exclusive else '<='} {high}"
        return ""

    def check(self, value: Any, label: str) -> Any:
        """The value in the declared type, within the declared range; `label` names the option in the message."""
        if value is None:
            if self.nullable:
                return None
            raise UserInputError(f"{label} needs a value")
        if self.kind is list:
            if not isinstance(value, (list, tuple)) or not all(_is_integral(v) for v in value):
                raise UserInputError(f"{label} must be {_KIND_NAMES[list]}, got {value!r}")
            return [self._check_scalar(v, int, label) for v in value]
        return self._check_scalar(value, self.kind, label)

    def _check_scalar(self, value: Any, kind: type, label: str) -> Any:
        value = _as_kind(value, kind, label)
        if self.choices and value not in self.choices:
            hint = did_you_mean(value, self.choices) if isinstance(value, str) else ""
            raise UserInputError(f"{label} must be {self.allowed()}, got {value!r}{hint}")
        if self.pattern and not re.fullmatch(self.pattern, value):
            raise UserInputError(f"{label} must match {self.pattern}, got {value!r}")
        if kind in (int, float) and not self._in_range(value):
            rule = f"in {self.allowed()}" if self.min is not None and self.max is not None else self.allowed()
            raise UserInputError(f"{label} must be {rule}, got {value!r}")
        return value

    def _in_range(self, value: float) -> bool:
        above = self.min is None or (value > self.min if self.min_exclusive else value >= self.min)
        below = self.max is None or (value < self.max if self.max_exclusive else value <= self.max)
        return above and below


def _number(value: Any) -> str:
    """A float without trailing zeros (0.0 -> 0, 1e-4 -> 0.0001); anything else as str()."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _is_integral(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and value == int(value)


_EXPONENT = re.compile(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+")


def _as_kind(value: Any, kind: type, label: str) -> Any:
    """The value as `kind` (an integral number for int, any finite number for float), else a UserInputError.

    For float, text in exponent notation without a dot (`5e-4`) is read as the number: YAML 1.1, which PyYAML
    follows, leaves it a string."""
    if kind is float and isinstance(value, str) and _EXPONENT.fullmatch(value.strip()):
        value = float(value)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind in (int, float) and number and not math.isfinite(value):
        raise UserInputError(f"{label} must be a finite number, got {value!r}")
    if kind is int and _is_integral(value):
        return int(value)
    if kind is float and number:
        return float(value)
    if kind is dict and isinstance(value, dict):
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise UserInputError(f"{label} must map names to values, got the key {bad[0]!r}")
        return dict(value)
    if kind in (bool, str) and isinstance(value, kind):
        return value
    raise UserInputError(f"{label} must be {_KIND_NAMES[kind]}, got {value!r}")


LossFactory = Callable[..., EpochLoss]


@dataclass(frozen=True)
class _Entry:
    factory: LossFactory
    description: str
    options: tuple[Option, ...]


_REGISTRY: dict[str, _Entry] = {}

# Every loss of the toolkit derives from EpochLoss and so takes this option.
CHECK_INPUTS = Option("check_inputs", bool, True, "check shapes, label range and finite logits on every call")


def register_loss(name: str, description: str,
                  options: typing.Sequence[Option] = ()) -> Callable[[LossFactory], LossFactory]:
    """Decorator: make a factory `fn(num_classes, **options) -> EpochLoss` available by name with its options."""
    def wrap(fn: LossFactory) -> LossFactory:
        _REGISTRY[name] = _Entry(fn, description, tuple(options))
        return fn
    return wrap


def list_losses() -> dict[str, str]:
    """Registered loss names with a one-line description each."""
    return {name: entry.description for name, entry in sorted(_REGISTRY.items())}


def _entry(name: Any) -> _Entry:
    if not isinstance(name, str) or name not in _REGISTRY:
        hint = did_you_mean(name, _REGISTRY) if isinstance(name, str) else ""
        raise UserInputError(f"unknown method {name!r}; available: {', '.join(sorted(_REGISTRY))}{hint}")
    return _REGISTRY[name]


def loss_options(name: str) -> tuple[Option, ...]:
    """The options a registered loss declares, in the order it lists them."""
    return _entry(name).options


def validate_loss_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options checked against the loss's declarations (names, types, ranges) and in their declared types."""
    declared = {option.name: option for option in _entry(name).options}
    checked = {}
    for key, value in options.items():
        if key not in declared:
            hint = did_you_mean(str(key), declared) or f"; its options: {', '.join(declared)}"
            raise UserInputError(f"unknown option {key!r} for method {name!r}{hint}")
        checked[key] = declared[key].check(value, f"option {key} of method {name}")
    return checked


def build_loss(name: str, num_classes: int, **options: Any) -> EpochLoss:
    """Build a registered loss; unknown names, unknown options and values the loss refuses are user errors."""
    checked = validate_loss_options(name, options)
    try:
        return _entry(name).factory(num_classes, **checked)
    except UserInputError:
        raise
    except ValueError as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserInputError(f"method {name}: {reason}") from err


@register_loss("ce", "cross-entropy with hard labels", [CHECK_INPUTS])
def _ce(num_classes: int, **options: Any) -> EpochLoss:
    return CrossEntropy(num_classes, **options)


@register_loss("ls", "label smoothing (eps/K convention, eps 0.1 by default)", [
    Option("eps", float, 0.1, "smoothing: 1 - eps + eps/K on the label, eps/K elsewhere", min=0.0, max=1.0),
    CHECK_INPUTS,
])
def _ls(num_classes: int, **options: Any) -> EpochLoss:
    return LabelSmoothingCrossEntropy(num_classes, **options)


@register_loss("ols", "Online Label Smoothing (preset=paper-cifar | paper-fine-grained, or our defaults)", [
    Option("preset", str, None, f"the paper's code path: sets {', '.join(sorted(set().union(*PRESETS.values())))}"
           "; options given as well override it", choices=tuple(PRESETS), nullable=True),
    Option("hard_weight", float, 0.5, "weight of the cross-entropy with the hard label", min=0.0),
    Option("soft_weight", float, 0.5, "weight of the cross-entropy with the learned soft label", min=0.0),
    Option("init", str, "ls", "soft labels before the first update", choices=typing.get_args(Init)),
    Option("init_eps", float, 0.1, "eps of init=ls", min=0.0, max=1.0),
    Option("empty_class", str, "keep", "row of a class with no correct prediction in an update",
           choices=typing.get_args(EmptyRule)),
    Option("freeze_threshold", float, None, "freeze rows whose maximum already reaches this (off when unset)",
           min=0.0, max=1.0, min_exclusive=True, nullable=True),
    Option("momentum", float, 0.0, "S <- m S + (1 - m) new at each update", min=0.0, max=1.0, max_exclusive=True),
    Option("update_every", int, None, "update S every N training steps instead of every epoch", min=1,
           nullable=True),
    Option("temperature", float, 1.0, "softmax temperature of the accumulated statistics", min=0.0,
           min_exclusive=True),
    Option("top_k", int, None, "keep each row of S as its top_k largest entries plus a uniform rest: memory "
           "linear in the class count, for large K (exact when top_k >= K)", min=1, nullable=True,
           default_text="dense"),
    Option("candidates", int, None, "with top_k: columns per class in the statistics' candidate store",
           min=1, nullable=True, default_text="2 top_k"),
    CHECK_INPUTS,
])
def _ols(num_classes: int, preset: str | None = None, **options: Any) -> EpochLoss:
    if preset:
        return OnlineLabelSmoothing.from_preset(preset, num_classes, **options)
    return OnlineLabelSmoothing(num_classes, **options)


@register_loss("tfkd", "Tf-KD regulariser: virtual teacher 0.99, alpha 0.95, temperature 6", [
    Option("correct_prob", float, 0.99, "the virtual teacher's probability of the label", min=0.0, max=1.0,
           min_exclusive=True, max_exclusive=True),
    Option("alpha", float, 0.95, "weight of the KL term; 1 - alpha goes to the cross-entropy", min=0.0, max=1.0),
    Option("temperature", float, 6.0, "softens the teacher (the paper: 6 for ResNet-50, 40 for MobileNetV2)",
           min=0.0, min_exclusive=True),
    Option("multiplier", float, 1.0, "extra factor on the KL term", min=0.0),
    Option("kl_reduction", str, "mean", "mean over all B*K elements (the released code) or per sample",
           choices=("mean", "batchmean")),
    CHECK_INPUTS,
])
def _tfkd(num_classes: int, **options: Any) -> EpochLoss:
    return TfKDRegularization(num_classes, **options)


@register_loss("cskd", "class-wise self-KD: KL to a same-class sample's prediction, T 4, weight 1 (3 fine-grained)", [
    Option("temperature", float, 4.0, "softens both predictions; the KL is multiplied by T^2", min=0.0,
           min_exclusive=True),
    Option("weight", float, 1.0, "weight of the KL term (the authors' lambda: 1 on CIFAR, 3 on fine-grained sets)",
           min=0.0),
    CHECK_INPUTS,
])
def _cskd(num_classes: int, **options: Any) -> EpochLoss:
    return ClassWiseSelfKD(num_classes, **options)


@register_loss("pskd", "progressive self-KD: target (1 - a_t) onehot + a_t p_prev, a_t = 0.8 (epoch + 1) / E", [
    Option("alpha", float, 0.8, "a_t at the last epoch (the authors' alpha_T)", min=0.0, max=1.0),
    Option("store_dtype", str, "float32", "precision of the N x K store of last predictions (4 or 2 bytes each)",
           choices=typing.get_args(StoreDtype)),
    CHECK_INPUTS,
])
def _pskd(num_classes: int, **options: Any) -> EpochLoss:
    return ProgressiveSelfKD(num_classes, **options)


@register_loss("zipf", "Zipf's label smoothing: CE + 0.1 KL(rank^-1 prior || non-target softmax)", [
    Option("weight", float, 0.1, "weight of the KL term (the authors: 0.1 on CIFAR-100 and ImageNet, 1 on "
           "TinyImageNet and iNaturalist)", min=0.0),
    Option("power", float, 1.0, "the prior over non-target classes is rank^-power", min=0.0),
    Option("correct_only", bool, False, "average the KL over correctly predicted samples only (the authors' --mask)"),
    CHECK_INPUTS,
])
def _zipf(num_classes: int, **options: Any) -> EpochLoss:
    return ZipfLabelSmoothing(num_classes, **options)


@register_loss("maxsup", "max suppression: CE + lambda (z_max - mean z), lambda 0.1 to 0.2 over training", [
    Option("lambda_start", float, 0.1, "lambda in the first epoch (or step)", min=0.0),
    Option("lambda_end", float, 0.2, "lambda in the last epoch (or step)", min=0.0),
    Option("schedule", str, "epoch", "lambda rises per epoch (the authors' code) or per training step",
           choices=typing.get_args(Schedule)),
    CHECK_INPUTS,
])
def _maxsup(num_classes: int, **options: Any) -> EpochLoss:
    return MaxSuppression(num_classes, **options)


_CORRECTION_OPTIONS = [
    Option("transition", str, "known", "the matrix T[i, j] = P(noisy j | clean i): known (the realised one of the "
           "run's --noise), estimate (anchor points of a cross-entropy model's softmax on the training data), or "
           "the path of a .npy / .json K x K file"),
    Option("estimate_percentile", float, 97.0, "with transition=estimate, the anchor of class i is the most "
           "confident sample below this percentile of p(i|x); none takes the most confident one (the authors' "
           "CIFAR-100 setting)", min=0.0, max=100.0, nullable=True),
    CHECK_INPUTS,
]


@register_loss("forward", "forward loss correction: cross-entropy of p T (Patrini et al. 2017)", _CORRECTION_OPTIONS)
def _forward(num_classes: int, **options: Any) -> EpochLoss:
    return ForwardCorrection(num_classes, **options)


@register_loss("backward", "backward loss correction: T^-1 times the per-class losses (Patrini et al. 2017)",
               _CORRECTION_OPTIONS)
def _backward(num_classes: int, **options: Any) -> EpochLoss:
    return BackwardCorrection(num_classes, **options)


@register_loss("elr", "early-learning regularisation, per-sample target EMA (cifar10 beta/lam 0.7/3, cifar100 0.9/7)", [
    Option("preset", str, "cifar10", "the authors' beta and lam for a dataset; beta or lam given as well override it",
           choices=tuple(ELR_PRESETS)),
    Option("beta", float, None, "momentum of the per-sample target: t <- beta t + (1 - beta) p", min=0.0, max=1.0,
           max_exclusive=True, nullable=True, default_text="from the preset"),
    Option("lam", float, None, "weight of the regulariser lam * mean log(1 - <p, t>)", min=0.0, nullable=True,
           default_text="from the preset"),
    CHECK_INPUTS,
])
def _elr(num_classes: int, **options: Any) -> EpochLoss:
    return ELR(num_classes, **options)


_FRACTION = {"min": 0.0, "max": 1.0, "min_exclusive": True, "max_exclusive": True}


@register_loss("sce", "symmetric cross-entropy alpha CE + beta RCE (cifar10 0.1/1, cifar100 6/0.1, mnist 0.01/1)", [
    Option("preset", str, "cifar10", "the authors' alpha/beta for a dataset (mnist also for Fashion-MNIST); "
           "alpha or beta given as well override it", choices=tuple(SCE_PRESETS)),
    Option("alpha", float, None, "weight of the cross-entropy term", min=0.0, nullable=True,
           default_text="from the preset"),
    Option("beta", float, None, "weight of the reverse cross-entropy term", min=0.0, nullable=True,
           default_text="from the preset"),
    Option("label_clip", float, 1e-4, "the one-hot label is clipped to [label_clip, 1] in the reverse term",
           **_FRACTION),
    Option("pred_clip", float, 1e-7, "the softmax is clipped to [pred_clip, 1]", **_FRACTION),
    CHECK_INPUTS,
])
def _sce(num_classes: int, **options: Any) -> EpochLoss:
    return SymmetricCrossEntropy(num_classes, **options)


@register_loss("gce", "generalised cross-entropy, the Lq loss (1 - p_y^q)/q, q 0.7", [
    Option("q", float, 0.7, "0 < q <= 1: towards 0 cross-entropy, 1 mean absolute error", min=0.0, max=1.0,
           min_exclusive=True),
    CHECK_INPUTS,
])
def _gce(num_classes: int, **options: Any) -> EpochLoss:
    return GeneralizedCrossEntropy(num_classes, **options)


@register_loss("bootsoft", "soft bootstrapping: target beta y + (1 - beta) p, beta 0.95", [
    Option("beta", float, 0.95, "weight of the given label; 1 - beta goes to the model's softmax", min=0.0, max=1.0),
    CHECK_INPUTS,
])
def _bootsoft(num_classes: int, **options: Any) -> EpochLoss:
    return Bootstrapping(num_classes, mode="soft", **options)


@register_loss("boothard", "hard bootstrapping: target beta y + (1 - beta) onehot(argmax p), beta 0.8", [
    Option("beta", float, 0.8, "weight of the given label; 1 - beta goes to the model's arg-max class", min=0.0,
           max=1.0),
    CHECK_INPUTS,
])
def _boothard(num_classes: int, **options: Any) -> EpochLoss:
    return Bootstrapping(num_classes, mode="hard", **options)


@register_loss("disturb", "DisturbLabel: each training label redrawn uniformly from all classes at rate 0.1", [
    Option("rate", float, 0.1, "probability that a label is replaced by a uniformly drawn class", min=0.0, max=1.0),
    CHECK_INPUTS,
])
def _disturb(num_classes: int, **options: Any) -> EpochLoss:
    return DisturbLabel(num_classes, **options)


@register_loss("jo", "joint optimisation's loss: CE + 1.2 KL(uniform || batch mean p) + 0.8 entropy", [
    Option("alpha", float, 1.2, "weight of the prior term KL(prior || mean prediction of the batch)", min=0.0),
    Option("beta", float, 0.8, "weight of the mean entropy of the predictions", min=0.0),
    CHECK_INPUTS,
])
def _jo(num_classes: int, **options: Any) -> EpochLoss:
    return JointOptimization(num_classes, **options)


@register_loss("pc", "pairwise confusion: CE + 10 x the distance of paired softmax outputs, from start_epoch on", [
    Option("lam", float, 10.0, "weight of the pairwise confusion term", min=0.0),
    Option("start_epoch", int, 0, "epochs of plain cross-entropy before the term is switched on", min=0),
    CHECK_INPUTS,
])
def _pc(num_classes: int, **options: Any) -> EpochLoss:
    return PairwiseConfusion(num_classes, **options)
