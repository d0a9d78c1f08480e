"""Initialisation shared by searched candidates and hand-designed baselines, so that they start alike."""

from __future__ import annotations

from torch import nn


def reset_classifier_init(model: nn.Module) -> None:
    """Give the classifier PyTorch's Linear init (bound 1/sqrt(width)) in place of TF's
    1/sqrt(num_classes), which assumes 1000 classes: with 10 its logits start with std 3-4 and a
    loss of 5-7 (ln 10 = 2.3), and a short run spends its first epoch undoing that. At 1000
    classes and width 1280 the two bounds are 0.032 and 0.028."""
    classifier = model.get_classifier()
    if isinstance(classifier, nn.Linear):
        classifier.reset_parameters()
