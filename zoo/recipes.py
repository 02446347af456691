"""The training recipe names a manifest may use, declared once: optimizers, schedules, inits, augmentations.

``zoo`` declares them (name and one line each), torch-free, so that a manifest is
validated, and ``zoo plan`` runs, without importing torch. ``builders`` implements
them and attaches each implementation by name (``@OPTIMIZERS.implement("adam")``);
an implementation of an undeclared name, or a second one, fails at import, and a
test checks that after ``import builders`` every declared name has exactly one.
"""

from __future__ import annotations

from .registry import Declarations


def _declarations(kind: str, docs: dict[str, str]) -> Declarations:
    registry = Declarations(kind)
    for name, doc in docs.items():
        registry.declare(name, doc)
    return registry


#: ``training.optimizer``: population optimizers whose arithmetic follows ``torch.optim`` (``builders/optim.py``).
OPTIMIZERS = _declarations("optimizer", {
    "adam": "Adam (betas 0.9, 0.999; eps 1e-8); weight decay added to the gradient",
    "adamw": "AdamW: Adam with decoupled weight decay",
    "sgd": "SGD with training.momentum (0: plain SGD)",
    "rmsprop": "RMSprop (alpha 0.99; eps 1e-8)",
})

#: ``training.schedule``: the learning-rate multiplier per optimizer step (``builders/optim.py``).
SCHEDULES = _declarations("schedule", {
    "constant": "the manifest's learning rate throughout",
    "onecycle": "torch's OneCycleLR(max_lr=lr) stepped per batch, momentum not cycled",
})

#: ``training.init``: how conv and linear weights are drawn; biases get 0.01 (``builders/initializers.py``).
INITS = _declarations("init", {
    "default": "PyTorch's own initialization, biases included",
    "uniform": "U(0, 1)",
    "normal": "N(0, training.init_std or 1)",
    "truncated_normal": "N(0, std) truncated at 2 std; std = training.init_std or 1",
    "orthogonal": "orthogonal matrices (torch.nn.init.orthogonal_)",
    "kaiming_uniform": "He uniform (torch.nn.init.kaiming_uniform_ defaults)",
    "kaiming_normal": "He normal (torch.nn.init.kaiming_normal_ defaults)",
    "xavier_uniform": "Glorot uniform",
    "xavier_normal": "Glorot normal",
})

#: ``training.augmentation``: train-time image augmentation, batched on the device (``builders/image_augment.py``).
AUGMENTATIONS = _declarations("augmentation", {
    "none": "no augmentation",
    "crop_flip": "RandomCrop(size, padding=4), then RandomHorizontalFlip(0.5)",
    "flip_rotate": "RandomHorizontalFlip(0.5), then RandomRotation(20)",
})

#: Every recipe registry, by the manifest field it validates.
RECIPES = {"training.optimizer": OPTIMIZERS, "training.schedule": SCHEDULES, "training.init": INITS,
           "training.augmentation": AUGMENTATIONS}

__all__ = ["AUGMENTATIONS", "INITS", "OPTIMIZERS", "RECIPES", "SCHEDULES"]
