"""The VGG16 defect classifier: the network with torchvision's layer names (:mod:`.vgg`), its
knobs (:mod:`.options`), training batches (:mod:`.batches`), training (:mod:`.train`),
several trained networks read as one (:mod:`.ensemble`),
prediction (:mod:`.predict`) and int8 calibration crops (:mod:`.calibration`)."""

from training.classifier.batches import BatchMaker, augment, synthetic_validation
from training.classifier.calibration import calibration_tensors
from training.classifier.ensemble import Ensemble
from training.classifier.options import ClassifierOptions, ClassifierResult
from training.classifier.predict import predict
from training.classifier.train import train_classifier
from training.classifier.vgg import (
    VGG16,
    PretrainedMismatch,
    VGGConfig,
    has_batch_norm,
    load_pretrained,
    read_state_dict,
)

__all__ = [
    "VGG16",
    "BatchMaker",
    "ClassifierOptions",
    "ClassifierResult",
    "Ensemble",
    "PretrainedMismatch",
    "VGGConfig",
    "augment",
    "calibration_tensors",
    "has_batch_norm",
    "load_pretrained",
    "predict",
    "read_state_dict",
    "synthetic_validation",
    "train_classifier",
]
