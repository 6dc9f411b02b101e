"""The training configuration: one dataclass, filled from defaults, then a YAML recipe, then command-line flags.

Each field declares what it accepts next to it, in its metadata: `choices`, `min`/`max` (with `min_exclusive`,
`max_exclusive`), `pattern`, and `default_text` for what an unset default means. `validate_config` checks them
all in one place. Loss options are declared by each loss (`olsmooth.losses.registry`) and checked there. What each
field is to an experiment (its role: part of it, or free to change on resume) is `olsmooth.option_roles.ROLES`.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ..data_choices import AUGMENT_LEVELS, INPUT_NORMS, SPLITS, SUBSET_DRAWS
from ..errors import UserInputError
from ..losses.registry import Option, did_you_mean, loss_options, validate_loss_options
from ..option_roles import LOSS_OPTION_ALIASES

if TYPE_CHECKING:
    from ..data.noise import NoiseSpec

# The dataset that ships inside scikit-learn: it reads no files, so a data root given with it is ignored.
EMBEDDED_DATASET = "digits"

_log = logging.getLogger("olsmooth")


@dataclass
class TrainConfig:
    """Every option of `olsmooth train`; the YAML keys are these names, the flags the same with dashes."""

    # data
    dataset: str = field(default=EMBEDDED_DATASET, metadata={"help": "dataset name (see --list-datasets)"})
    data_root: str | None = field(default=None, metadata={"help": "where the dataset lies",
                                                          "default_text": "per dataset"})
    split: str | None = field(default=None, metadata={"help": "train/test split of datasets that offer a choice "
                                                              "(the fine-grained sets)",
                                                      "choices": SPLITS,
                                                      "default_text": f"the dataset's first ({SPLITS[0]})"})
    image_size: int | None = field(default=None, metadata={"help": "override the preset's image side",
                                                           "default_text": "per dataset", "min": 1})
    download: bool = field(default=False, metadata={"help": "let torchvision download the dataset"})
    train_subset: int | None = field(default=None, metadata={"help": "train on N training samples (quick "
                                                                     "studies): a seeded stratified draw, or the "
                                                                     "first N with --train-subset-draw first; "
                                                                     "evaluation keeps all",
                                                             "default_text": "all", "min": 1})
    train_subset_draw: str = field(default="stratified", metadata={"help": "how --train-subset picks its samples: "
                                                                           "stratified = a draw from the run's seed "
                                                                           "that keeps the class proportions, first "
                                                                           "= the first N in the dataset's order (as "
                                                                           "before the seeded draw)",
                                                                   "choices": SUBSET_DRAWS})
    workers: int | None = field(default=None, metadata={"help": "data-loader processes", "min": 0,
                                                        "default_text": "0 for in-memory sets, else min(8, cores)"})
    augment: str = field(default="default", metadata={"help": "training augmentation (docs/datasets.md says what "
                                                              "each level does per dataset)",
                                                      "choices": AUGMENT_LEVELS})
    input_norm: str = field(default="dataset", metadata={"help": "normalise inputs with the dataset's mean/std or "
                                                                 "with ImageNet's, the statistics pretrained weights "
                                                                 "were trained with (docs/datasets.md)",
                                                         "choices": INPUT_NORMS})
    val_fraction: float = field(default=0.0, metadata={"help": "hold out this stratified, seeded fraction of the "
                                                               "training data for validation: best.pt is chosen on it "
                                                               "and the test split is evaluated at the best and last "
                                                               "epoch (0 = evaluate on the test split every epoch)",
                                                       "min": 0.0, "max": 1.0, "max_exclusive": True})
    noise: str | None = field(default=None, metadata={"help": "corrupt the training labels: KIND:RATE with KIND "
                                                             "symmetric, symmetric-any, asymmetric, "
                                                             "asymmetric-superclass, pairflip or instance and RATE in "
                                                             "[0, 1) (docs/noise.md); evaluation labels stay clean",
                                                     "default_text": "clean labels"})
    noise_seed: int | None = field(default=None, metadata={"help": "seed of the label noise", "min": 0,
                                                           "max": 2**32 - 1, "default_text": "the run's seed"})
    noise_map: str | None = field(default=None, metadata={"help": "JSON file {class: class} of asymmetric noise for "
                                                                  "datasets without a built-in map",
                                                          "file_pattern": ".+"})
    # model
    model: str | None = field(default=None, metadata={"help": "model name (see --list-models)",
                                                      "default_text": "per dataset"})
    model_options: dict = field(default_factory=dict, metadata={"help": "an option of the chosen network, "
                                                                        "repeatable (e.g. mlp's grid=28, "
                                                                        "small_cnn's widths=[16,32]; docs/models.md)"})
    pretrained: str | None = field(default=None, metadata={"help": "local weights file (torchvision/timm format)",
                                                           "file_pattern": ".+"})
    channels_last: bool = field(default=False, metadata={"help": "use the channels_last memory format"})
    compile: bool = field(default=False, metadata={"help": "torch.compile the model"})
    sync_bn: bool = field(default=False, metadata={"help": "SyncBatchNorm under torchrun"})
    # method
    method: str = field(default="ols", metadata={"help": "the loss, by its registered name (see --list-methods)"})
    loss_options: dict = field(default_factory=dict, metadata={"help": "an option of the chosen loss, repeatable "
                                                                       "(see --list-methods)"})
    # optimisation
    epochs: int | None = field(default=None, metadata={"help": "training epochs", "default_text": "per dataset",
                                                       "min": 1})
    batch_size: int | None = field(default=None, metadata={"help": "batch size per process",
                                                           "default_text": "per dataset", "min": 1})
    lr: float | None = field(default=None, metadata={"help": "peak learning rate", "default_text": "per dataset",
                                                     "min": 0.0, "min_exclusive": True})
    optimizer: str = field(default="sgd", metadata={"help": "optimiser", "choices": ("sgd", "adamw")})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum", "min": 0.0, "max": 1.0,
                                                   "max_exclusive": True})
    nesterov: bool = field(default=False, metadata={"help": "Nesterov momentum"})
    weight_decay: float | None = field(default=None, metadata={"help": "weight decay", "default_text": "per dataset",
                                                               "min": 0.0})
    decay_all_params: bool = field(default=False, metadata={"help": "decay biases and norm weights too "
                                                                    "(the paper's code does)"})
    sched: str = field(default="cosine", metadata={"help": "learning-rate schedule",
                                                   "choices": ("cosine", "multistep", "constant")})
    milestones: list = field(default_factory=list, metadata={"help": "epochs where multistep multiplies by gamma",
                                                             "min": 1})
    gamma: float = field(default=0.1, metadata={"help": "multistep factor", "min": 0.0, "max": 1.0,
                                                "min_exclusive": True})
    warmup_epochs: float = field(default=0.0, metadata={"help": "linear warm-up length in epochs", "min": 0.0})
    clip_grad: float | None = field(default=None, metadata={"help": "clip the gradient norm to this value",
                                                            "default_text": "no clipping", "min": 0.0,
                                                            "min_exclusive": True})
    mixup: float = field(default=0.0, metadata={"help": "mixup alpha (0 = off)", "min": 0.0})
    cutmix: float = field(default=0.0, metadata={"help": "cutmix alpha (0 = off)", "min": 0.0})
    ema_decay: float | None = field(default=None, metadata={"help": "keep an EMA of the weights with this decay",
                                                            "default_text": "no EMA", "min": 0.0, "max": 1.0,
                                                            "min_exclusive": True, "max_exclusive": True})
    amp: str = field(default="none", metadata={"help": "mixed precision (fp16 uses a grad scaler)",
                                               "choices": ("none", "bf16", "fp16")})
    seed: int = field(default=0, metadata={"help": "random seed", "min": 0, "max": 2**32 - 1})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda or cuda:N", "pattern": r"cpu|cuda(:\d+)?",
                                                       "default_text": "cuda when present"})
    threads: int | None = field(default=None, metadata={"help": "torch intra-op CPU threads", "min": 1,
                                                        "default_text": "torch's choice"})
    dist_timeout: float | None = field(default=None, metadata={"help": "under torchrun, seconds a process waits for "
                                                                       "a hung peer before stopping with an error",
                                                               "min": 0.0, "min_exclusive": True,
                                                               "default_text": "600 (10 minutes)"})
    # run folder
    out: str | None = field(default=None, metadata={"help": "run folder",
                                                    "default_text": "runs/DATE-dataset-method"})
    save_every: int = field(default=0, metadata={"help": "write epoch-NNN.pt snapshots every N epochs (0 = none)",
                                                 "min": 0})
    force: bool = field(default=False, metadata={"help": "replace an existing run folder"})
    # a recipe's published reference, shown next to the measured figure at the end
    expected_top1_error: float | None = field(default=None, metadata={"help": "published top-1 error in % "
                                                                              "(recipes)", "min": 0.0, "max": 100.0})
    reference: str | None = field(default=None, metadata={"help": "where the expected figure comes from"})

    @property
    def noise_spec(self) -> NoiseSpec | None:
        """`noise` as its typed value (kind, rate), None for clean labels; `validate_config` stored its canonical
        text."""
        from ..data.noise import NoiseSpec
        return None if self.noise is None else NoiseSpec.parse(self.noise)

    def loss_kwargs(self) -> dict[str, Any]:
        """Options handed to `build_loss` for the chosen method: the loss options, untouched."""
        return dict(self.loss_options)

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML-able dictionary."""
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_HINTS = typing.get_type_hints(TrainConfig)
_DECLARATION_KEYS = ("choices", "min", "max", "min_exclusive", "max_exclusive", "pattern", "default_text",
                     "file_pattern")


def _declared_option(spec: dataclasses.Field) -> Option:
    """The field as an Option: type and `| None` from its annotation, help and allowed values from its metadata."""
    args = typing.get_args(_HINTS[spec.name])
    kind = next((a for a in args if a is not type(None)), _HINTS[spec.name])
    default = spec.default_factory() if spec.default is dataclasses.MISSING else spec.default
    declared = {key: spec.metadata[key] for key in _DECLARATION_KEYS if key in spec.metadata}
    return Option(spec.name, kind, default, spec.metadata.get("help", ""), nullable=type(None) in args, **declared)


# What each field accepts; `validate_config` and the command line's flags are built from it.
OPTIONS: dict[str, Option] = {name: _declared_option(spec) for name, spec in FIELDS.items()}


def recipes_dir() -> Path:
    """Folder of the shipped YAML recipes."""
    return Path(str(resources.files("olsmooth") / "configs"))


def list_recipes() -> dict[str, dict[str, Any]]:
    """Shipped recipes by name, each with its options, `base:` resolved (the protocols they include are not listed)."""
    return {p.stem: load_recipe(p) for p in sorted(recipes_dir().glob("*.yaml"))}


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing, unreadable, binary, malformed or non-mapping file is a user error."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserInputError(f"config file not found: {path}") from None
    except OSError as err:
        raise UserInputError(f"cannot read config file {path}: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise UserInputError(f"cannot read config file {path}: not UTF-8 text (a binary file?)") from None
    except yaml.YAMLError as err:
        raise UserInputError(f"malformed YAML in {path}: {str(err).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserInputError(f"{path} must hold a mapping of option: value")
    return data


def resolve_recipe_path(name: str, folder: Path = Path()) -> Path:
    """A recipe argument is a YAML path (relative to `folder`), or the name of a shipped recipe relative to the
    configs folder (`cub200-resnet50-ols`, `protocols/fine-grained`)."""
    path = folder / name
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    shipped = recipes_dir() / f"{name}.yaml"
    if shipped.exists():
        return shipped
    close = difflib.get_close_matches(name, [p.stem for p in recipes_dir().glob("*.yaml")], n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see olsmooth train --list-recipes"
    raise UserInputError(f"no recipe or config file {name!r}{hint}")


def load_recipe(path: Path) -> dict[str, Any]:
    """A recipe's options with its `base:` included: a recipe name or a path relative to the including file, whose
    options (and its own base's, recursively) come first. The including file's keys win; loss_options merge key by
    key, as `build_config` reads a recipe then the flags. A missing base or a cycle is a user error naming the file."""
    return _load_recipe(Path(path), ())


def _load_recipe(path: Path, including: tuple[Path, ...]) -> dict[str, Any]:
    """`load_recipe` of `path`, included by the files of `including` (outermost first)."""
    recipe = read_yaml(path)
    if "base" not in recipe:
        return recipe
    recipe = dict(recipe)
    name = recipe.pop("base")
    if not isinstance(name, str) or not name:
        raise UserInputError(f"{path}: base must be a recipe name or a YAML path, got {name!r}")
    try:
        base = resolve_recipe_path(name, path.parent)
    except UserInputError as err:
        raise UserInputError(f"{path}: base: {err}") from None
    if not base.is_file():
        raise UserInputError(f"{path}: base {name!r} not found: no file {base}")
    chain = (*including, path)
    if base.resolve() in {p.resolve() for p in chain}:
        raise UserInputError(f"{path}: base {name!r} includes itself: {' -> '.join(map(str, (*chain, base)))}")
    return _merge_recipes(_load_recipe(base, chain), recipe, path)


def _merge_recipes(base: dict[str, Any], recipe: dict[str, Any], path: Path) -> dict[str, Any]:
    """`recipe` over `base`, giving what `build_config` gives for the two read in turn: the later write of a key
    wins, loss_options merge key by key, and an alias stays before or after loss_options so that the later of the
    two writes of its loss option still wins."""
    writes: dict[Any, Any] = {}  # every key and ("loss_options", name), in the order of their last write
    has_options = False
    for source in (base, recipe):
        for key, value in source.items():
            key = key.replace("-", "_") if isinstance(key, str) else key
            entries = [(key, value)]
            if key == "loss_options":
                has_options = True
                entries = [((key, name), v) for name, v in OPTIONS[key].check(value, f"{path}: option {key}").items()]
            for entry, entry_value in entries:
                writes.pop(entry, None)
                writes[entry] = entry_value
    before: dict[Any, Any] = {}
    options: dict[str, Any] = {}
    after: dict[str, Any] = {}
    for key, value in writes.items():
        if isinstance(key, tuple):
            options[key[1]] = value
        elif key in LOSS_OPTION_ALIASES and LOSS_OPTION_ALIASES[key][1] in options:
            after[key] = value
        else:
            before[key] = value
    return {**before, **({"loss_options": options} if has_options else {}), **after}


def from_text(kind: type, text: str) -> Any:
    """A command-line string read as `kind` (int, float, anything else stays text); text that is not a number is
    returned unchanged, so the option's check rejects it with the option's name."""
    if kind not in (int, float):
        return text
    try:
        return kind(text)
    except ValueError:
        return text


def validate_config(cfg: TrainConfig) -> TrainConfig:
    """A copy of `cfg` with every value checked against its field's declaration (type, choices, range) and the loss
    options against the method's; the first bad value raises a one-line UserInputError naming it."""
    values = {name: option.check(getattr(cfg, name), f"option {name}") for name, option in OPTIONS.items()}
    values["loss_options"] = validate_loss_options(values["method"], values["loss_options"])
    values["noise"] = _canonical_noise(values["noise"], values["noise_map"])
    return TrainConfig(**values)


def _canonical_noise(noise: str | None, noise_map: str | None) -> str | None:
    """`noise` read by the one parser (`NoiseSpec.parse`) and stored as its canonical text, so that two spellings
    of a setting make one run configuration; a noise map goes with asymmetric noise only. Checked when the
    configuration is built, before anything is created."""
    if noise is None:
        return None
    from ..data.noise import NoiseSpec
    try:
        spec = NoiseSpec.parse(noise)
    except UserInputError as err:
        raise UserInputError(f"option noise: {err}") from None
    if noise_map is not None and spec.kind != "asymmetric":
        raise UserInputError(f"option noise_map: a noise map applies to asymmetric noise only, not to {spec.kind}")
    return str(spec)


def input_files(cfg: TrainConfig) -> dict[str, str]:
    """The files a run of `cfg` reads when it starts, by the option that names each (`pretrained`, `noise_map`, a
    loss option such as `transition`): the values that match their option's declared `file_pattern`. A resumed run
    reads none of them again; last.pt holds what they gave."""
    declared = {**{name: (option, getattr(cfg, name)) for name, option in OPTIONS.items()},
                **{f"loss option {o.name}": (o, cfg.loss_options[o.name]) for o in loss_options(cfg.method)
                   if o.name in cfg.loss_options}}
    return {name: value for name, (option, value) in declared.items() if option.names_file(value)}


def ineffective_options(cfg: TrainConfig) -> list[str]:
    """One line for each group of options set away from their default that has no effect in this configuration."""
    def changed(*names: str) -> str:
        return ", ".join(n for n in names if getattr(cfg, n) != OPTIONS[n].default)

    notes = []
    if cfg.sched != "multistep" and (names := changed("milestones", "gamma")):
        notes.append(f"{names}: no effect with sched {cfg.sched} (only with multistep)")
    if cfg.optimizer != "sgd" and (names := changed("momentum", "nesterov")):
        notes.append(f"{names}: no effect with optimizer {cfg.optimizer} (only with sgd)")
    if cfg.train_subset is None and (names := changed("train_subset_draw")):
        notes.append(f"{names}: no effect without --train-subset")
    if cfg.noise is None and cfg.noise_map is not None:
        notes.append("noise_map: no effect without asymmetric --noise")
    if cfg.dataset == EMBEDDED_DATASET and cfg.data_root is not None:
        notes.append(f"data_root: ignored, the {EMBEDDED_DATASET} dataset is embedded")
    return notes


def _source_items(source: Any) -> list[tuple[str, Any]]:
    """(key, value) pairs of one source with dashes read as underscores; unknown keys suggest the closest."""
    if not isinstance(source, dict):
        raise UserInputError(f"a configuration must be a mapping of option: value, got {type(source).__name__}")
    items = []
    for key, value in source.items():
        if not isinstance(key, str):
            raise UserInputError(f"option names must be strings, got {key!r}")
        key = key.replace("-", "_")
        if key not in FIELDS and key not in LOSS_OPTION_ALIASES:
            raise UserInputError(f"unknown option {key!r}{did_you_mean(key, [*FIELDS, *LOSS_OPTION_ALIASES])}")
        items.append((key, value))
    return items


def build_config(recipe: dict[str, Any] | None, overrides: dict[str, Any]) -> TrainConfig:
    """Defaults < recipe < overrides, validated (`validate_config`); unknown keys are errors that suggest the closest.

    Loss options merge key by key, later sources winning. An alias (LOSS_OPTION_ALIASES) sets its loss option when
    the method is its loss; otherwise it is checked, then dropped with a warning, as options that have no effect
    get one (warnings go to the "olsmooth" logger once the whole configuration is known to be good).
    """
    sources = [_source_items(source) for source in (recipe or {}, overrides)]
    method = next((v for items in reversed(sources) for k, v in reversed(items) if k == "method"),
                  OPTIONS["method"].default)
    method = OPTIONS["method"].check(method, "option method")
    values: dict[str, Any] = {}
    loss_options: dict[str, Any] = {}
    notes: list[str | None] = []
    for items in sources:
        for key, value in items:
            if key == "loss_options":
                for name, option_value in OPTIONS[key].check(value, "option loss_options").items():
                    notes.append(_set_loss_option(loss_options, method, name, option_value))
            elif key in LOSS_OPTION_ALIASES:
                notes.append(_set_loss_option(loss_options, method, key, value))
            elif key == "model_options":  # key by key, later sources winning, as loss options
                values[key] = {**values.get(key, {}), **OPTIONS[key].check(value, "option model_options")}
            else:
                values[key] = value
    cfg = validate_config(TrainConfig(**values, loss_options=loss_options))
    for note in [note for note in notes if note] + ineffective_options(cfg):
        _log.warning("olsmooth: warning: %s", note)
    return cfg


def _set_loss_option(options: dict[str, Any], method: str, key: str, value: Any) -> str | None:
    """Set one loss option, reading an alias as the option it stands for (an unset alias sets nothing). An alias of
    another method is checked all the same and set nothing: the note saying so is returned."""
    if key not in LOSS_OPTION_ALIASES:
        options[key] = value
        return None
    alias_method, name = LOSS_OPTION_ALIASES[key]
    if value is None:
        return None
    if alias_method != method:
        validate_loss_options(alias_method, {name: value})
        return f"{key}: no effect with method {method} (it sets option {name} of method {alias_method})"
    options[name] = value
    return None
