"""The training configuration: one dataclass, filled from defaults, then a YAML recipe, then command-line flags."""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserInputError


@dataclass
class TrainConfig:
    """Every option of `olsmooth train`; the YAML keys are these names, the flags the same with dashes."""

    # data
    dataset: str = field(default="digits", metadata={"help": "dataset name (see --list-datasets)"})
    data_root: str | None = field(default=None, metadata={"help": "where the dataset lies (default: per dataset)"})
    split: str = field(default="paper", metadata={"help": "fine-grained split: paper | official"})
    image_size: int | None = field(default=None, metadata={"help": "override the preset's image side"})
    download: bool = field(default=False, metadata={"help": "let torchvision download the dataset"})
    train_subset: int | None = field(default=None, metadata={"help": "train on the first N training samples "
                                                                     "(quick studies); evaluation keeps all"})
    workers: int | None = field(default=None, metadata={"help": "data-loader processes (default: 0 for "
                                                                 "in-memory sets, else min(8, cores))"})
    # model
    model: str | None = field(default=None, metadata={"help": "model name (see --list-models); default per dataset"})
    pretrained: str | None = field(default=None, metadata={"help": "local weights file (torchvision/timm format)"})
    channels_last: bool = field(default=False, metadata={"help": "use the channels_last memory format"})
    compile: bool = field(default=False, metadata={"help": "torch.compile the model"})
    sync_bn: bool = field(default=False, metadata={"help": "SyncBatchNorm under torchrun"})
    # method
    method: str = field(default="ols", metadata={"help": "loss: ce | ls | ols | tfkd (see --list-methods)"})
    ols_preset: str | None = field(default=None, metadata={"help": "OLS preset: paper-cifar | paper-fine-grained"})
    ls_eps: float | None = field(default=None, metadata={"help": "label-smoothing eps (method ls)"})
    tfkd_temperature: float | None = field(default=None, metadata={"help": "Tf-KD temperature (method tfkd)"})
    loss_options: dict = field(default_factory=dict, metadata={"help": "extra loss options as KEY=VALUE"})
    # optimisation
    epochs: int | None = field(default=None, metadata={"help": "training epochs (default per dataset)"})
    batch_size: int | None = field(default=None, metadata={"help": "batch size per process (default per dataset)"})
    lr: float | None = field(default=None, metadata={"help": "peak learning rate (default per dataset)"})
    optimizer: str = field(default="sgd", metadata={"help": "sgd | adamw"})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum"})
    nesterov: bool = field(default=False, metadata={"help": "Nesterov momentum"})
    weight_decay: float | None = field(default=None, metadata={"help": "weight decay (default per dataset)"})
    decay_all_params: bool = field(default=False, metadata={"help": "decay biases and norm weights too "
                                                                    "(the paper's code does)"})
    sched: str = field(default="cosine", metadata={"help": "cosine | multistep | constant"})
    milestones: list = field(default_factory=list, metadata={"help": "epochs where multistep multiplies by gamma"})
    gamma: float = field(default=0.1, metadata={"help": "multistep factor"})
    warmup_epochs: float = field(default=0.0, metadata={"help": "linear warm-up length in epochs"})
    clip_grad: float | None = field(default=None, metadata={"help": "clip the gradient norm to this value"})
    mixup: float = field(default=0.0, metadata={"help": "mixup alpha (0 = off)"})
    cutmix: float = field(default=0.0, metadata={"help": "cutmix alpha (0 = off)"})
    ema_decay: float | None = field(default=None, metadata={"help": "keep an EMA of the weights with this decay"})
    amp: str = field(default="none", metadata={"help": "mixed precision: none | bf16 | fp16 (fp16 uses a scaler)"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    device: str | None = field(default=None, metadata={"help": "cpu | cuda | cuda:N (default: cuda when present)"})
    # run folder
    out: str | None = field(default=None, metadata={"help": "run folder (default runs/DATE-dataset-method)"})
    save_every: int = field(default=0, metadata={"help": "write epoch-NNN.pt snapshots every N epochs"})
    force: bool = field(default=False, metadata={"help": "replace an existing run folder"})
    # a recipe's published reference, shown next to the measured figure at the end
    expected_top1_error: float | None = field(default=None, metadata={"help": "published top-1 error (recipes)"})
    reference: str | None = field(default=None, metadata={"help": "where the expected figure comes from"})

    def loss_kwargs(self) -> dict[str, Any]:
        """Options handed to `build_loss` for the chosen method."""
        options = dict(self.loss_options)
        if self.method == "ols" and self.ols_preset:
            options.setdefault("preset", self.ols_preset)
        if self.method == "ls" and self.ls_eps is not None:
            options.setdefault("eps", self.ls_eps)
        if self.method == "tfkd" and self.tfkd_temperature is not None:
            options.setdefault("temperature", self.tfkd_temperature)
        return options

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML-able dictionary."""
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_HINTS = typing.get_type_hints(TrainConfig)

# Keys a resumed run must share with its checkpoint: changing them would train a different experiment.
IDENTITY_KEYS = ("dataset", "split", "image_size", "train_subset", "model", "method", "ols_preset", "ls_eps",
                 "tfkd_temperature", "loss_options", "batch_size", "optimizer", "sched", "seed", "amp", "mixup",
                 "cutmix", "ema_decay")


def recipes_dir() -> Path:
    """Folder of the shipped YAML recipes."""
    return Path(str(resources.files("olsmooth") / "configs"))


def list_recipes() -> dict[str, dict[str, Any]]:
    """Shipped recipes by name, each with its parsed content."""
    return {p.stem: read_yaml(p) for p in sorted(recipes_dir().glob("*.yaml"))}


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing, malformed or non-mapping file is a user error."""
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserInputError(f"config file not found: {path}") from None
    except yaml.YAMLError as err:
        raise UserInputError(f"malformed YAML in {path}: {str(err).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserInputError(f"{path} must hold a mapping of option: value")
    return data


def resolve_recipe_path(name: str) -> Path:
    """A recipe argument is a YAML path, or the name of a shipped recipe."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    shipped = recipes_dir() / f"{name}.yaml"
    if shipped.exists():
        return shipped
    close = difflib.get_close_matches(name, [p.stem for p in recipes_dir().glob("*.yaml")], n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see olsmooth train --list-recipes"
    raise UserInputError(f"no recipe or config file {name!r}{hint}")


def field_type(name: str) -> type:
    """The field's declared type without its `| None`."""
    hint = _HINTS[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def coerce(name: str, value: Any) -> Any:
    """Check one value against the field's declared type (YAML has already parsed numbers and booleans)."""
    kind = field_type(name)
    if value is None:
        if type(None) in typing.get_args(_HINTS[name]):
            return None
        raise UserInputError(f"{name} needs a value")
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int and number and value == int(value):
        return int(value)
    if kind is float and number:
        return float(value)
    if kind is list and isinstance(value, (list, tuple)) and all(isinstance(v, int) for v in value):
        return list(value)
    if kind in (bool, str, dict) and isinstance(value, kind):
        return value
    expected = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
                dict: "a mapping", list: "a list of integers"}[kind]
    raise UserInputError(f"option {name} must be {expected}, got {value!r}")


def build_config(recipe: dict[str, Any] | None, overrides: dict[str, Any]) -> TrainConfig:
    """Defaults < recipe < overrides; unknown keys are errors that suggest the closest option."""
    values: dict[str, Any] = {}
    for source in (recipe or {}, overrides):
        for key, value in source.items():
            key = key.replace("-", "_")
            if key not in FIELDS:
                close = difflib.get_close_matches(key, list(FIELDS), n=1)
                raise UserInputError(f"unknown option {key!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
            values[key] = coerce(key, value)
    return TrainConfig(**values)
