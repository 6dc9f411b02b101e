"""What each option of `olsmooth train` is to an experiment, said once: `ROLES` gives every field of
`olsmooth.engine.config.TrainConfig` one `Role`, and every list of options by role (what a resume may change,
what a report and a study treat as the same experiment, what a study sets, which options choose the loss)
derives from it here.

The table lives in a module that imports nothing, as `data_choices` does, because the report (`olsmooth.analysis`)
needs it and may not import `olsmooth.engine`; tests/test_option_roles.py checks that it names exactly the
configuration's fields, in their order, and that resume, the report, the study and docs/cli.md do what it says.
"""

from __future__ import annotations

from enum import Enum


class Role(Enum):
    """What an option is to an experiment, and so what resume, reports and studies do with it."""

    EXPERIMENT = "experiment"
    """Changes what the run measures: a resume refuses a new value, reports group runs by it, a study compares it
    with the run it finds in a folder."""
    LENGTH = "length"
    """How long the run trains: part of the experiment, except that a resume may extend it (never shorten it)."""
    REPLICATE = "replicate"
    """Which repetition of the experiment (the seed): a resume refuses a new value, reports pair runs by it, a study
    sets it for each run."""
    EXECUTION = "execution"
    """How and where the same run goes (threads, workers, device, where the data lies, snapshots): free to change on
    resume, never a report group, not compared by a study."""
    NOTE = "note"
    """What the run cites (a recipe's published figure and its source): free to change on resume, never a report
    group, not compared by a study."""
    PLACE = "place"
    """The run folder and whether to replace it: set by a resume and by a study themselves, never a report group."""


ROLES: dict[str, Role] = {
    # data
    "dataset": Role.EXPERIMENT,
    "data_root": Role.EXECUTION,
    "split": Role.EXPERIMENT,
    "image_size": Role.EXPERIMENT,
    "download": Role.EXECUTION,
    "train_subset": Role.EXPERIMENT,
    "train_subset_draw": Role.EXPERIMENT,
    "workers": Role.EXECUTION,
    "augment": Role.EXPERIMENT,
    "input_norm": Role.EXPERIMENT,
    "val_fraction": Role.EXPERIMENT,
    "noise": Role.EXPERIMENT,
    "noise_seed": Role.EXPERIMENT,
    "noise_map": Role.EXPERIMENT,
    # model
    "model": Role.EXPERIMENT,
    "model_options": Role.EXPERIMENT,
    "pretrained": Role.EXPERIMENT,
    "channels_last": Role.EXECUTION,
    "compile": Role.EXECUTION,
    "sync_bn": Role.EXPERIMENT,  # batch statistics over all processes instead of each one's: other numbers
    # method
    "method": Role.EXPERIMENT,
    "loss_options": Role.EXPERIMENT,
    # optimisation
    "epochs": Role.LENGTH,
    "batch_size": Role.EXPERIMENT,
    "lr": Role.EXPERIMENT,
    "optimizer": Role.EXPERIMENT,
    "momentum": Role.EXPERIMENT,
    "nesterov": Role.EXPERIMENT,
    "weight_decay": Role.EXPERIMENT,
    "decay_all_params": Role.EXPERIMENT,
    "sched": Role.EXPERIMENT,
    "milestones": Role.EXPERIMENT,
    "gamma": Role.EXPERIMENT,
    "warmup_epochs": Role.EXPERIMENT,
    "clip_grad": Role.EXPERIMENT,
    "mixup": Role.EXPERIMENT,
    "cutmix": Role.EXPERIMENT,
    "ema_decay": Role.EXPERIMENT,
    "amp": Role.EXPERIMENT,  # lower precision changes the numbers, not only the speed
    "seed": Role.REPLICATE,
    "device": Role.EXECUTION,
    "threads": Role.EXECUTION,
    "dist_timeout": Role.EXECUTION,
    # run folder
    "out": Role.PLACE,
    "save_every": Role.EXECUTION,  # snapshots are extra files; the training is the same
    "force": Role.PLACE,
    # a recipe's published reference
    "expected_top1_error": Role.NOTE,
    "reference": Role.NOTE,
}

# Keys kept from when these were fields of the configuration: each sets one option of one loss. They are
# accepted as YAML keys, inside loss_options and as flags (--ols-preset ...), so old recipes and run folders load.
LOSS_OPTION_ALIASES: dict[str, tuple[str, str]] = {
    "ols_preset": ("ols", "preset"),
    "ls_eps": ("ls", "eps"),
    "tfkd_temperature": ("tfkd", "temperature"),
}


def options_with(*roles: Role) -> tuple[str, ...]:
    """The options that have one of `roles`, in the configuration's order."""
    return tuple(name for name, role in ROLES.items() if role in roles)


RESUME_MAY_CHANGE = options_with(Role.LENGTH, Role.EXECUTION, Role.NOTE)
"""Options a resumed run may change (a LENGTH option only upward); any other difference is another experiment."""
SET_BY_RESUME = options_with(Role.PLACE)
"""Options a resume sets itself (the run's folder, no replacing): they cannot be given with --resume."""
NON_EXPERIMENT_OPTIONS = options_with(Role.EXECUTION, Role.NOTE, Role.PLACE)
"""Options that do not change what a run measures: runs that differ only in these (and the seed) are runs of one
experiment, for reports and for a study that finds a run in its folder."""
SET_BY_STUDY = options_with(Role.REPLICATE, Role.PLACE)
"""Options a study sets for every run itself; its base and grid may not set them."""
METHOD_OPTIONS = ("method", "loss_options", *LOSS_OPTION_ALIASES)
"""The loss and its options (old run folders' config.yaml may hold the aliases): one factor when a report looks for
groups that differ in one thing."""
