"""olsmooth: Online Label Smoothing losses and a training toolkit around them."""

from .losses import (
    CrossEntropy,
    LabelSmoothingCrossEntropy,
    OnlineLabelSmoothing,
    TfKDRegularization,
    build_loss,
    list_losses,
)

__version__ = "0.1.0"

__all__ = [
    "CrossEntropy", "LabelSmoothingCrossEntropy", "OnlineLabelSmoothing", "TfKDRegularization", "build_loss",
    "list_losses", "__version__",
]
