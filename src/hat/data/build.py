"""Build the train/val/test splits of a resolved dataset (:class:`hat.data.spec.DataSpec`).

A dataset on disk is read whole at start-up, in the layout :func:`hat.data.spec.data_spec` found
there, and checked before training: annotation files, captions and image files. Every problem
found is reported in one :class:`~hat.data.problems.DatasetError`.
"""

from __future__ import annotations

import logging

from hat.data import karpathy, vsepp
from hat.data.images import check_image_files
from hat.data.problems import DatasetError
from hat.data.records import CaptionedImages, duplicate_images, load_image_file
from hat.data.shapes import build_shapes_splits
from hat.data.spec import DataSpec

log = logging.getLogger(__name__)


def build_splits(spec: DataSpec, seed: int) -> dict[str, CaptionedImages]:
    """``{"train", "val", "test"}`` splits, none empty; ``val`` keeps the first ``spec.val_images``
    images and ``test`` the first ``spec.test_images`` (a debugging limit; None: all).

    A dataset on disk is checked whole first (:func:`read_dataset_on_disk`). Raises
    :class:`DatasetError` when ``dataset.val_images`` keeps no val image.
    """
    if spec.generated is not None:
        sizes = spec.generated
        splits = build_shapes_splits(seed=seed, num_train=sizes.num_train, num_val=sizes.num_val,
                                     num_test=sizes.num_test, image_size=sizes.render_size,
                                     captions_per_image=spec.captions_per_image)
    else:
        splits = read_dataset_on_disk(spec)
    splits["val"] = splits["val"].subset(spec.val_images)
    splits["test"] = splits["test"].subset(spec.test_images)
    if len(splits["val"]) == 0:
        why = f"dataset.val_images={spec.val_images} keeps none of its images"
        raise DatasetError([_empty_split(spec, "val", why)])
    return splits


def read_dataset_on_disk(spec: DataSpec) -> dict[str, CaptionedImages]:
    """Read and check the annotations and image files of ``dataset.root``, in its layout.

    Raises :class:`DatasetError` listing every problem found: unreadable files, bad entries or
    captions, image files listed twice (:func:`~hat.data.records.duplicate_images`), and (unless
    ``dataset.skip_bad_images``, which drops them) bad image files
    (:func:`~hat.data.images.check_image_files`). A split with no images is a problem too, naming
    the split, the annotation file(s) and the root: one the annotations list no image for (when
    they have no other problem), or one that ``skip_bad_images`` emptied.
    """
    log.info("dataset %s: reading %s in the %s layout", spec.name, spec.root, spec.layout)
    if spec.layout == "karpathy":
        records, problems = karpathy.read_karpathy_records(
            spec.name, spec.root, spec.captions_per_image, spec.extra_captions, spec.use_restval, spec.on_bad_text
        )
    else:
        records, problems = vsepp.read_vsepp_records(spec.root, spec.captions_per_image, spec.use_restval,
                                                     spec.on_bad_text)
    if not problems:  # entries with problems are left out: a split they emptied would be one more line, saying nothing
        problems = [
            _empty_split(spec, split, f"{_split_source(spec, split)} lists no {split} image")
            for split, split_records in records.items()
            if not split_records
        ]
    problems += duplicate_images(records)
    if problems and spec.skip_bad_images:
        raise DatasetError(problems)  # skipping reports no image problems: spare the slow decoding pass
    listed = {split: len(split_records) for split, split_records in records.items()}
    records, image_problems = check_image_files(records, spec.skip_bad_images)
    problems += image_problems + [
        _empty_split(spec, split, f"dataset.skip_bad_images=true dropped all {listed[split]} of its images")
        for split, split_records in records.items()
        if listed[split] and not split_records
    ]
    if problems:
        raise DatasetError(problems)
    return {
        split: CaptionedImages(split, split_records, spec.captions_per_image, load_image_file)
        for split, split_records in records.items()
    }


def _empty_split(spec: DataSpec, split: str, why: str) -> str:
    """The problem of a split left with no images: names the split, why, the dataset and its root."""
    return f"the {split} split is empty: {why} (dataset={spec.name}, dataset.root={spec.root})"


def _split_source(spec: DataSpec, split: str) -> str:
    """The annotation file(s) that list ``split``'s images in the dataset's layout, as paths under the root."""
    if spec.layout == "karpathy":
        return str(karpathy.annotation_path(spec.name, spec.root))
    files = vsepp.id_files(spec.use_restval)
    names = [files[split], *([files["restval"]] if split == "train" and "restval" in files else [])]
    return " and ".join(str(spec.root / name) for name in names)
