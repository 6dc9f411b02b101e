"""Models by name: our small and CIFAR networks, SAN-15, and every torchvision and timm classifier.

    from olsmooth.models import create_model
    model = create_model("cifar_resnet56", num_classes=100)
    model = create_model("tv/resnet50", num_classes=200, pretrained="resnet50-19c8e357.pth")
"""

from . import cifar, san, small
from .pretrained import LoadReport, load_pretrained
from .registry import accepts_in_chans, create_model, list_models, model_source, register_model

__all__ = ["LoadReport", "accepts_in_chans", "cifar", "create_model", "list_models", "load_pretrained", "model_source",
           "register_model", "san", "small"]
