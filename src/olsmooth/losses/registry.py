"""Losses by name, each with its declared options: the one place the command line, YAML recipes, `--list-methods`,
the docs and validation read.

A loss declares itself once, in its own module, with the `register_loss` class decorator: its name, a one-line
description and its options (name, help, range). Each option's type, default and choices come from the
constructor's signature (a `Literal[...]` annotation gives the choices, `| None` makes it nullable), so nothing is
restated. `build_loss("ols", num_classes=K, momentum=0.5)` checks every option against the declarations and turns a
constructor's ValueError into a one-line `UserInputError`.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib
import inspect
import math
import pkgutil
import re
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from ..errors import UserInputError

if TYPE_CHECKING:
    from .common import EpochLoss

_KIND_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string", dict: "a mapping",
               list: "a list of integers"}


def did_you_mean(word: str, known: typing.Iterable[str]) -> str:
    """'; did you mean 'x'?' for the closest known word, or ''."""
    close = difflib.get_close_matches(word, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


class _FromSignature:
    """The default of an Option whose default is the constructor's."""

    def __repr__(self) -> str:
        return "FROM_SIGNATURE"


FROM_SIGNATURE: Any = _FromSignature()


@dataclass(frozen=True)
class Option:
    """A declared option: type, default, allowed values and help. `check` returns the value in the declared type
    or raises a one-line UserInputError naming the option, the value and what is allowed.

    `kind` is int, float, str, bool, dict or list (a list of integers, each within the range); `default_text` says
    what an unset (None) default means, for --help. A loss's option may leave `kind` and `default` out: the
    registry takes them (and choices, and whether None is allowed) from the constructor's signature.
    `file_pattern` marks a text option whose values matching it (whole) are paths of files the run reads when it
    starts, so that a study can check they exist before its first run.
    """

    name: str
    kind: type | None = None
    default: Any = dataclasses.field(default_factory=lambda: FROM_SIGNATURE)
    help: str = ""
    choices: tuple[Any, ...] = ()
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    max_exclusive: bool = False
    pattern: str | None = None
    nullable: bool = False
    default_text: str = ""
    file_pattern: str | None = None

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

    def names_file(self, value: Any) -> bool:
        """Whether `value` of this option is the path of a file the run reads (see `file_pattern`)."""
        return (self.file_pattern is not None and isinstance(value, str)
                and re.fullmatch(self.file_pattern, value) is not None)

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


@dataclass(frozen=True)
class LossEntry:
    """A registered loss: its class, a one-line description, its options and the constructor arguments the name
    fixes (bootstrapping's mode)."""

    cls: type
    description: str
    options: tuple[Option, ...]
    fixed: tuple[tuple[str, Any], ...] = ()

    def build(self, num_classes: int, options: dict[str, Any]) -> EpochLoss:
        """The loss from already checked options, through the class's `from_options`."""
        return self.cls.from_options(num_classes, **dict(self.fixed), **options)


_REGISTRY: dict[str, LossEntry] = {}

# Every loss of the toolkit derives from EpochLoss and so takes this option; the registry adds it to each.
CHECK_INPUTS = Option("check_inputs", help="check shapes, label range and finite logits on every call")


def register_loss(name: str, description: str, options: typing.Sequence[Option] = (),
                  **fixed: Any) -> Callable[[type], type]:
    """Class decorator: make an EpochLoss available by name with its declared options, in the order given, plus
    `check_inputs`. An option's type, default and choices come from the constructor's signature unless given;
    `fixed` are constructor arguments the name sets (not options)."""
    def wrap(cls: type) -> type:
        if name in _REGISTRY and _REGISTRY[name].cls is not cls:
            raise ValueError(f"loss name {name!r} is registered twice ({_REGISTRY[name].cls.__name__}, {cls.__name__})")
        declared = tuple(_from_signature(cls, option) for option in (*options, CHECK_INPUTS))
        _REGISTRY[name] = LossEntry(cls, description, declared, tuple(fixed.items()))
        return cls
    return wrap


def _from_signature(cls: type, option: Option) -> Option:
    """`option` with what it leaves out (type, default, choices, nullable) read from `cls.__init__`."""
    parameter = inspect.signature(cls.__init__).parameters.get(option.name)
    if option.kind is not None and option.default is not FROM_SIGNATURE:
        return option
    if parameter is None or parameter.default is inspect.Parameter.empty:
        raise TypeError(f"{cls.__name__} declares option {option.name!r}, which its constructor does not take "
                        f"with a default: give its kind and default")
    hint = typing.get_type_hints(cls.__init__)[option.name]
    args = typing.get_args(hint)
    nullable = type(None) in args
    if nullable:
        hint = next(a for a in args if a is not type(None))
    choices = option.choices
    if typing.get_origin(hint) is typing.Literal:
        choices = choices or typing.get_args(hint)
        hint = type(choices[0])
    default = parameter.default if option.default is FROM_SIGNATURE else option.default
    kind = option.kind or typing.get_origin(hint) or hint
    return dataclasses.replace(option, kind=kind, default=default, choices=choices,
                               nullable=option.nullable or nullable)


def check_declared(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments of a registered class checked against its declared options (the rule the command line
    and recipes are checked with), in the declared types; a UserInputError (a ValueError) names a bad one."""
    entry = next((e for e in _REGISTRY.values() if e.cls is cls), None)
    if entry is None:
        raise TypeError(f"{cls.__name__} is not a registered loss")
    declared = {option.name: option for option in entry.options}
    return {key: declared[key].check(value, f"{cls.__name__} option {key}") for key, value in values.items()}


@functools.cache
def _import_loss_modules() -> None:
    """Import every module of the losses package once: each registers its own losses."""
    package = importlib.import_module(__package__)
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{__package__}.{module.name}")


def _registered() -> dict[str, LossEntry]:
    """The registry, every module of the losses package imported."""
    _import_loss_modules()
    return _REGISTRY


def list_losses() -> dict[str, str]:
    """Registered loss names with a one-line description each."""
    return {name: entry.description for name, entry in sorted(_registered().items())}


def loss_entry(name: Any) -> LossEntry:
    """The registration of a loss name; an unknown one is a UserInputError that lists the names."""
    registry = _registered()
    if not isinstance(name, str) or name not in registry:
        hint = did_you_mean(name, registry) if isinstance(name, str) else ""
        raise UserInputError(f"unknown method {name!r}; available: {', '.join(sorted(registry))}{hint}")
    return registry[name]


def loss_options(name: str) -> tuple[Option, ...]:
    """The options a registered loss declares, in the order it lists them."""
    return loss_entry(name).options


def validate_loss_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options checked against the loss's declarations (names, types, ranges) and in their declared types."""
    declared = {option.name: option for option in loss_entry(name).options}
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
        return loss_entry(name).build(num_classes, checked)
    except UserInputError:
        raise
    except ValueError as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserInputError(f"method {name}: {reason}") from err
