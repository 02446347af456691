"""The manifest's schema: every field of every section (``SECTIONS``), the limits on what a manifest may ask
for, and the constants that say which fields vary between models. Its own module because validation, expansion,
the metadata columns and the report all read this one table, and none of them should have to import the others.
"""

from __future__ import annotations

import re

from .. import recipes
from ..architectures import ARCHITECTURES
from ..datasets import DATASETS
from ..fields import Field

MANIFEST_VERSION = 1
#: Upper bounds where a larger value can only be a mistake (and would exhaust memory or overflow before any
#: training): image sides, images, batch, epochs, models. Seeds stay below 2**62 so that seed offsets and the
#: int64 metadata columns hold them.
MAX_SIDE = 4096
MAX_IMAGES = 10**8
MAX_BATCH = 2**20
MAX_EPOCHS = 10_000
MAX_MODELS = 1_000_000
#: Checkpoints (models x checkpoint epochs) a zoo may plan: ten times the largest published zoos' count, and a bound
#: on what a plan, a status or a metadata read of a stranger's store may cost.
MAX_CHECKPOINTS = 10_000_000
MAX_SEED = 2**62


PRECISIONS = ("fp32", "tf32", "bf16-mixed")
COMPILE = ("auto", "off")

#: The manifest's fields, section by section. ``architecture`` also takes the chosen architecture's options.
SECTIONS: dict[str, dict[str, Field]] = {
    "zoo": {
        "name": Field(str, required=True, doc="zoo name: lowercase letters, digits, '.', '_', '-'"),
        "kind": Field(str, "classifier", choices=("classifier", "inr"),
                      doc="classifier: networks trained on a dataset; inr: one neural field fitted per image "
                          "(its [images] say which)"),
        "description": Field(str, ""),
        "license": Field(str, "unknown"),
        "citation": Field(str, ""),
    },
    "dataset": {
        "name": Field(str, required=True, choices=DATASETS),
        "root": Field(str, "~/.cache/weightzoo/data", doc="where the dataset files are (or are downloaded to)"),
        "download": Field(bool, False),
        "grayscale": Field(bool, False),
        "resize": Field((int, type(None)), None, positive=True, maximum=MAX_SIDE),
        "center_crop": Field((int, type(None)), None, positive=True, maximum=MAX_SIDE),
        "normalize": Field(bool, True, doc="standardize per channel (with mean/std, or the train split's)"),
        "mean": Field((list, type(None)), None, doc="fixed per-channel means (the published zoos' constants)"),
        "std": Field((list, type(None)), None, doc="fixed per-channel standard deviations"),
        "val_size": Field((int, type(None)), None, minimum=0, maximum=MAX_IMAGES,
                          doc="training images held out for validation"),
        "split_seed": Field(int, 42, minimum=0, maximum=MAX_SEED),
    },
    "architecture": {  # exactly one of name and factory (checked by _architecture, not by Field.required)
        "name": Field(str, None, choices=ARCHITECTURES,
                      doc="a registered architecture (its options as flat keys of [architecture]), or "
                          "'torchvision:NAME' (its constructor's arguments in [architecture.kwargs])"),
        "factory": Field(str, None, doc="'package.module:function' returning a torch.nn.Module, importable where the "
                                        "zoo is built (its arguments in [architecture.kwargs]); excludes name"),
        "kwargs": Field(dict, None, doc="keyword arguments of a torchvision:NAME or factory constructor (any TOML "
                                        "values JSON can hold); the dataset fills in num_classes and the input shape"),
    },
    "training": {
        "optimizer": Field(str, "adam", choices=recipes.OPTIMIZERS),
        "lr": Field(float, 1e-3, positive=True),
        "momentum": Field(float, 0.0, minimum=0.0),
        "weight_decay": Field(float, 0.0, minimum=0.0),
        "schedule": Field(str, "constant", choices=recipes.SCHEDULES),
        "batch_size": Field(int, 32, positive=True, maximum=MAX_BATCH),
        "epochs": Field(int, required=True, positive=True, maximum=MAX_EPOCHS),
        "init": Field(str, "default", choices=recipes.INITS),
        "init_std": Field((float, type(None)), None, positive=True, doc="std of normal/truncated_normal init"),
        "train_fraction": Field(float, 1.0, positive=True, maximum=1.0, doc="fraction of the train split used"),
        "augmentation": Field(str, "none", choices=recipes.AUGMENTATIONS),
        "precision": Field(str, "fp32", choices=PRECISIONS,
                           doc="fp32 (default: reproducible, as the published zoos), or tf32 / bf16-mixed for GPU "
                               "recipes; recorded per checkpoint in the 'precision' column"),
        "compile": Field(str, "auto", choices=COMPILE,
                         doc="auto: the training step runs as a CUDA graph on a GPU, compiled on a CPU for long "
                             "populations; off: eager. Recorded per checkpoint in the 'step_mode' column"),
    },
    "population": {
        "seeds": Field((list, dict), None, doc="required unless `models` lists every model"),
        "grid": Field(dict, {}),
        "random": Field(dict, None),
        "models": Field(list, None, doc="explicit models, one table each: `seed` and 'section.field' values "
                                        "(imported zoos whose models form no grid); excludes seeds, grid, random"),
        "grouping": Field(str, "structure", choices=("structure", "architecture"),
                          doc="which models share a unit of work: 'structure' (models that train together, as "
                              "zoo build needs) or 'architecture' (any models of one layout: imported zoos, where "
                              "nothing trains and fewer, fuller units mean fewer files)"),
    },
    "checkpoints": {
        "epochs": Field((str, list), "all"),
    },
    "images": {  # inr zoos only: the images of the dataset that get a network each
        "split": Field(str, "train", choices=("train", "test"), doc="the source dataset's split"),
        "start": Field(int, 0, minimum=0, maximum=MAX_IMAGES, doc="index of the first image in that split"),
        "count": Field((int, str), "all", doc="how many consecutive images, or 'all' (to the split's end)"),
        "indices": Field((list, dict, type(None)), None,
                         doc="the images listed instead of start and count (imported zoos): indices in `split`, or "
                             "{train = [...], test = [...]} for images of both splits (the train ones first)"),
    },
}
#: The source splits an inr zoo's images come from, in the order a table of ``images.indices`` lists them.
IMAGE_SPLITS = ("train", "test")

#: Sections whose fields may vary between models (grid, random draws) and become metadata columns.
VARYING_SECTIONS = ("architecture", "training")
#: Training fields that must be equal across a zoo (epochs fix the number of checkpoints; precision and
#: compile say how the whole build runs).
FIXED_FIELDS = ("training.epochs", "training.precision", "training.compile")
#: Training fields about how a build runs, not what a model is: no hyperparameter columns (the store records
#: their effect per checkpoint: 'precision' and 'step_mode').
RUN_FIELDS = ("precision", "compile")
DISTRIBUTIONS = ("uniform", "log_uniform", "int_uniform", "choice")
#: What ``zoo.name`` may be: lowercase letters, digits, '.', '_', '-'.
ZOO_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
