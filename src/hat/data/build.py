"""Build the train/val/test splits named by ``dataset`` config, and check its root before any work.

A dataset on disk is read whole at start-up, in the layout found there (or the one
``dataset.layout`` forces), and checked before training: annotation files, captions and image
files. Every problem found is reported in one :class:`~hat.data.problems.DatasetError`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hat.data import karpathy, vsepp
from hat.data.images import check_image_files
from hat.data.problems import DatasetError
from hat.data.records import SPLIT_NAMES, CaptionedImages, duplicate_images, load_image_file
from hat.data.shapes import build_shapes_splits
from hat.data.text import BAD_TEXT_MODES

log = logging.getLogger(__name__)

DATASETS = ("shapes", "f30k", "coco")
LAYOUTS = {"f30k": ("karpathy",), "coco": ("karpathy", "vsepp")}  # dataset.layout=auto takes the first found
EXTRA_CAPTIONS = ("error", "truncate")


def check_dataset_root(cfg) -> None:
    """Check the ``dataset`` settings and that the data is on disk, before any work.

    Raises ``ValueError`` naming every bad setting, and ``FileNotFoundError`` naming the root, the
    layouts looked for and the files missing from each when the data is not there.
    """
    check_dataset_settings(cfg)
    if cfg.name != "shapes":
        resolve_layout(cfg)


def check_dataset_settings(cfg) -> None:
    """Raise ``ValueError`` naming each ``dataset.*`` value that cannot work, with what is allowed."""
    if cfg.name not in DATASETS:
        raise ValueError(f"dataset.name must be one of {DATASETS}, got {cfg.name!r}")
    if cfg.name == "shapes":
        return
    problems = []
    layouts = ("auto", *LAYOUTS[cfg.name])
    if cfg.get("layout", "auto") not in layouts:
        problems.append(f"dataset.layout={cfg.layout!r} is not one of {layouts} for dataset={cfg.name}")
    if cfg.get("on_bad_text", "error") not in BAD_TEXT_MODES:
        problems.append(f"dataset.on_bad_text={cfg.on_bad_text!r} is not one of {BAD_TEXT_MODES}")
    if not isinstance(cfg.get("skip_bad_images", False), bool):
        problems.append(f"dataset.skip_bad_images={cfg.skip_bad_images!r} must be true or false")
    if cfg.get("extra_captions", "error") not in EXTRA_CAPTIONS:
        problems.append(f"dataset.extra_captions={cfg.extra_captions!r} is not one of {EXTRA_CAPTIONS}")
    if not (isinstance(cfg.captions_per_image, int) and cfg.captions_per_image >= 1):
        problems.append(f"dataset.captions_per_image={cfg.captions_per_image!r} must be an integer >= 1")
    if problems:
        raise ValueError("; ".join(problems))


def dataset_root(cfg) -> Path:
    return Path(str(cfg.root)).expanduser()


def resolve_layout(cfg) -> str:
    """The layout ``dataset.root`` is read in: ``dataset.layout``, or for ``auto`` the first complete one.

    A layout is complete when all its annotation files are there. Raises ``FileNotFoundError``
    naming the root, each layout looked for and the files it lacks.
    """
    root = dataset_root(cfg)
    wanted = cfg.get("layout", "auto")
    candidates = LAYOUTS[cfg.name] if wanted == "auto" else (wanted,)
    expected = " or ".join(_describe(cfg.name, layout) for layout in candidates)
    if not root.is_dir():
        raise FileNotFoundError(
            f"dataset.root={root} does not exist (dataset={cfg.name}). Expected layout: {expected}. "
            f"Download the dataset and pass dataset.root=PATH"
        )
    missing = {layout: [name for name in _required_files(cfg, layout) if not (root / name).is_file()]
               for layout in candidates}
    for layout in candidates:
        if not missing[layout]:
            return layout
    if len(candidates) == 1:
        raise FileNotFoundError(
            f"dataset.root={root} has no {', '.join(missing[candidates[0]])} (dataset={cfg.name}, "
            f"dataset.layout={wanted}). Expected layout: {expected}"
        )
    looked_for = "".join(
        f"\n  {layout}: {_describe(cfg.name, layout)}; missing {', '.join(missing[layout])}" for layout in candidates
    )
    raise FileNotFoundError(
        f"dataset.root={root} holds neither {cfg.name} layout (dataset.layout=auto). Looked for:{looked_for}\n"
        f"Pass dataset.root=PATH, or dataset.layout={'|'.join(candidates)} to require one layout"
    )


def _describe(name: str, layout: str) -> str:
    if layout == "karpathy":
        return f"Karpathy JSON, {karpathy.EXPECTED_LAYOUT[name]}"
    return f"VSE++/SCAN, {vsepp.EXPECTED_LAYOUT}"


def _required_files(cfg, layout: str) -> list[str]:
    """The annotation files ``layout`` needs, relative to the root."""
    if layout == "karpathy":
        return [karpathy.ANNOTATION_FILES[cfg.name]]
    return vsepp.required_files(cfg.get("use_restval", False))


def build_splits(cfg, seed: int) -> dict[str, CaptionedImages]:
    """``{"train", "val", "test"}`` splits, none empty; ``val`` keeps the first ``dataset.val_images``
    images and ``test`` the first ``dataset.test_images`` (a debugging limit; None: all).

    A dataset on disk is checked whole first (:func:`read_dataset_on_disk`). Raises ``ValueError``
    naming ``dataset.num_train``/``num_val``/``num_test`` when a generated split would have no
    images, and :class:`DatasetError` when ``dataset.val_images`` keeps no val image.
    """
    check_dataset_root(cfg)
    if cfg.name == "shapes":
        _check_shapes_sizes(cfg)
        splits = build_shapes_splits(
            seed=seed,
            num_train=cfg.num_train,
            num_val=cfg.num_val,
            num_test=cfg.num_test,
            image_size=cfg.render_size,
            captions_per_image=cfg.captions_per_image,
        )
    else:
        splits = read_dataset_on_disk(cfg)
    splits["val"] = splits["val"].subset(cfg.get("val_images"))
    splits["test"] = splits["test"].subset(cfg.get("test_images"))
    if len(splits["val"]) == 0:
        val_images = cfg.get("val_images")
        raise DatasetError([_empty_split(cfg, "val", f"dataset.val_images={val_images} keeps none of its images")])
    return splits


def _check_shapes_sizes(cfg) -> None:
    """Raise ``ValueError`` naming each of ``dataset.num_train``/``num_val``/``num_test`` that is not an
    integer >= 1."""
    problems = [
        f"dataset.num_{split}={cfg[f'num_{split}']!r} must be an integer >= 1 (images generated for the {split} split)"
        for split in SPLIT_NAMES
        if not _is_count(cfg[f"num_{split}"])
    ]
    if problems:
        raise ValueError("; ".join(problems))


def _is_count(value) -> bool:
    """An integer >= 1 (not a bool: ``True`` is an ``int`` in Python but no count)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def read_dataset_on_disk(cfg) -> dict[str, CaptionedImages]:
    """Read and check the annotations and image files of ``dataset.root``, in its layout.

    Raises :class:`DatasetError` listing every problem found: unreadable files, bad entries or
    captions, image files listed twice (:func:`~hat.data.records.duplicate_images`), and (unless
    ``dataset.skip_bad_images``, which drops them) bad image files
    (:func:`~hat.data.images.check_image_files`). A split with no images is a problem too, naming
    the split, the annotation file(s) and the root: one the annotations list no image for (when
    they have no other problem), or one that ``skip_bad_images`` emptied.
    """
    root, layout = dataset_root(cfg), resolve_layout(cfg)
    log.info("dataset %s: reading %s in the %s layout", cfg.name, root, layout)
    on_bad_text = cfg.get("on_bad_text", "error")
    use_restval = cfg.get("use_restval", False)
    if layout == "karpathy":
        records, problems = karpathy.read_karpathy_records(
            cfg.name, root, cfg.captions_per_image, cfg.get("extra_captions", "error"), use_restval, on_bad_text
        )
    else:
        records, problems = vsepp.read_vsepp_records(root, cfg.captions_per_image, use_restval, on_bad_text)
    if not problems:  # entries with problems are left out: a split they emptied would be one more line, saying nothing
        problems = [
            _empty_split(cfg, split, f"{_split_source(cfg, layout, split)} lists no {split} image")
            for split, split_records in records.items()
            if not split_records
        ]
    problems += duplicate_images(records)
    skip_bad_images = cfg.get("skip_bad_images", False)
    if problems and skip_bad_images:
        raise DatasetError(problems)  # skipping reports no image problems: spare the slow decoding pass
    listed = {split: len(split_records) for split, split_records in records.items()}
    records, image_problems = check_image_files(records, skip_bad_images)
    problems += image_problems + [
        _empty_split(cfg, split, f"dataset.skip_bad_images=true dropped all {listed[split]} of its images")
        for split, split_records in records.items()
        if listed[split] and not split_records
    ]
    if problems:
        raise DatasetError(problems)
    return {
        split: CaptionedImages(split, split_records, cfg.captions_per_image, load_image_file)
        for split, split_records in records.items()
    }


def _empty_split(cfg, split: str, why: str) -> str:
    """The problem of a split left with no images: names the split, why, the dataset and its root."""
    return f"the {split} split is empty: {why} (dataset={cfg.name}, dataset.root={cfg.get('root')})"


def _split_source(cfg, layout: str, split: str) -> str:
    """The annotation file(s) that list ``split``'s images in ``layout``, as paths under the root."""
    root = dataset_root(cfg)
    if layout == "karpathy":
        return str(karpathy.annotation_path(cfg.name, root))
    files = vsepp.id_files(cfg.get("use_restval", False))
    names = [files[split], *([files["restval"]] if split == "train" and "restval" in files else [])]
    return " and ".join(str(root / name) for name in names)
