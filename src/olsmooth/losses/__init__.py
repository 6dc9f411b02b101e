"""Losses: Online Label Smoothing and the baselines it is compared with, each with a functional form."""

from .adaptive import MaxSuppression, ZipfLabelSmoothing, logit_ranks, max_suppression, maxsup_loss, zipf_loss
from .common import CrossEntropy, EpochLoss, TrainingRun, cross_entropy, validate_inputs
from .correction import (
    BackwardCorrection,
    ForwardCorrection,
    backward_corrected_loss,
    estimate_transition,
    forward_corrected_loss,
    read_transition,
)
from .elr import ELR, elr_loss
from .elr import PRESETS as ELR_PRESETS
from .noisy import (
    SCE_PRESETS,
    Bootstrapping,
    DisturbLabel,
    GeneralizedCrossEntropy,
    SymmetricCrossEntropy,
    bootstrap_loss,
    disturb_label_loss,
    disturb_labels,
    gce_loss,
    hard_bootstrap_loss,
    sce_loss,
    soft_bootstrap_loss,
)
from .online import PRESETS as OLS_PRESETS
from .online import OnlineLabelSmoothing, initial_soft_labels, ols_loss
from .registry import Option, build_loss, list_losses, loss_options, register_loss, validate_loss_options
from .regularised import (
    JointOptimization,
    PairwiseConfusion,
    jo_loss,
    pairwise_confusion,
    pairwise_confusion_loss,
)
from .selfkd import ClassWiseSelfKD, ProgressiveSelfKD, class_pair_kd_loss, progressive_alpha, pskd_loss, pskd_targets
from .smoothing import (
    LabelSmoothingCrossEntropy,
    TfKDRegularization,
    label_smoothing_cross_entropy,
    tfkd_loss,
    tfkd_teacher,
)

__all__ = [
    "ClassWiseSelfKD", "MaxSuppression", "ProgressiveSelfKD", "ZipfLabelSmoothing", "class_pair_kd_loss",
    "logit_ranks", "max_suppression", "maxsup_loss", "progressive_alpha", "pskd_loss", "pskd_targets",
    "zipf_loss",
    "BackwardCorrection", "ELR", "ELR_PRESETS", "ForwardCorrection", "backward_corrected_loss", "elr_loss",
    "estimate_transition", "forward_corrected_loss", "read_transition",
    "SCE_PRESETS", "Bootstrapping", "DisturbLabel", "GeneralizedCrossEntropy", "SymmetricCrossEntropy",
    "bootstrap_loss", "disturb_label_loss", "disturb_labels", "gce_loss", "hard_bootstrap_loss", "sce_loss",
    "soft_bootstrap_loss",
    "JointOptimization", "PairwiseConfusion", "jo_loss", "pairwise_confusion", "pairwise_confusion_loss",
    "CrossEntropy", "EpochLoss", "LabelSmoothingCrossEntropy", "OLS_PRESETS", "OnlineLabelSmoothing", "Option",
    "TfKDRegularization", "TrainingRun", "build_loss", "cross_entropy", "initial_soft_labels",
    "label_smoothing_cross_entropy", "list_losses", "loss_options", "ols_loss", "register_loss", "tfkd_loss",
    "tfkd_teacher", "validate_inputs", "validate_loss_options",
]
