"""The images of an inr zoo: which (split, index) of the source dataset gets a network, from ``images.start``
and ``count`` or from the images ``images.indices`` lists. Its own module because it is the one part of a
manifest checked against the dataset's split sizes, and only inr zoos have it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..datasets import DATASETS
from ..errors import allowed_text
from .schema import IMAGE_SPLITS, MAX_IMAGES
from .validate import Reader

if TYPE_CHECKING:
    from . import Manifest


def image_refs(manifest: Manifest) -> tuple[tuple[str, int], ...]:
    """inr zoos: (source split, index in that split) of each image that gets a network, in model order:
    ``images.start`` and ``count`` in ``images.split``, or the images ``images.indices`` lists."""
    if manifest.kind != "inr":
        return ()
    if manifest.images["indices"] is None:
        return tuple((manifest.images["split"], i) for i in image_range(manifest))
    r = Reader(manifest.source)
    given = manifest._raw.get("images", {})
    for key in ("start", "count"):
        if key in given:
            raise r.error(f"images.{key}", f"images.indices lists the images itself; remove images.{key}")
    indices = manifest.images["indices"]
    if isinstance(indices, dict):
        if "split" in given:
            raise r.error("images.split", "images.indices is a table of the images of each split; remove "
                                          "images.split")
        unknown = [k for k in indices if k not in IMAGE_SPLITS]
        if unknown:
            raise r.error(f"images.indices.{unknown[0]}", f"unknown split; "
                                                          f"{allowed_text(unknown[0], IMAGE_SPLITS)}")
        lists = [(split, f"images.indices.{split}", indices[split]) for split in IMAGE_SPLITS if split in indices]
    else:
        lists = [(manifest.images["split"], "images.indices", indices)]
    refs: list[tuple[str, int]] = []
    for split, where, values in lists:
        total = DATASETS.get(manifest.dataset["name"]).split_size(split)
        if not isinstance(values, list) or not values:
            raise r.error(where, f"expected a non-empty list of image indices, got {values!r}")
        for i, v in enumerate(values):
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < total:
                raise r.error(f"{where}[{i}]", f"got {v!r}; the {split} split of {manifest.dataset['name']!r} has "
                                               f"{total} images (0..{total - 1})")
        seen: set[int] = set()
        for i, v in enumerate(values):
            if v in seen:
                raise r.error(f"{where}[{i}]", f"image {v} is listed twice")
            seen.add(v)
        refs.extend((split, v) for v in values)
    if len(refs) > MAX_IMAGES:
        raise r.error("images.indices", f"{len(refs)} images; at most {MAX_IMAGES}")
    return tuple(refs)


def image_indices(manifest: Manifest) -> tuple[int, ...]:
    """inr zoos: the indices (in the source split ``images.split``) of the images that get a network; a zoo
    whose ``images.indices`` lists images of both splits has no one split (a ``ManifestError``: ``image_refs``
    gives each image's split)."""
    refs = manifest.image_refs
    splits = {split for split, _ in refs}
    if len(splits) > 1:
        raise Reader(manifest.source).error("images.indices", "lists images of both splits; what fits the images "
                                                              "of one split (zoo build) takes one split per zoo")
    return tuple(i for _, i in refs)


def image_range(manifest: Manifest) -> range:
    """``images.start`` and ``images.count`` validated against the split's size."""
    r = Reader(manifest.source)
    total = DATASETS.get(manifest.dataset["name"]).split_size(manifest.images["split"])
    start, count = manifest.images["start"], manifest.images["count"]
    if isinstance(count, str) and count != "all":
        raise r.error("images.count", f"got {count!r}; allowed: a number of images or 'all'")
    if start >= total:
        raise r.error("images.start", f"got {start}; the {manifest.images['split']} split of "
                                      f"{manifest.dataset['name']!r} has {total} images (0..{total - 1})")
    stop = total if count == "all" else start + count
    if isinstance(count, int) and (count < 1 or stop > total):
        raise r.error("images.count", f"got {count}; from image {start} the {manifest.images['split']} split of "
                                      f"{manifest.dataset['name']!r} has {total - start} images")
    return range(start, stop)
