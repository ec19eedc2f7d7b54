"""MSCOCO in the VSE++/SCAN layout that HAT reads (docs/data.md), with plain JSON.

``ROOT/annotations/captions_{train,val}2014.json`` are the standard COCO caption files (``images``
with ``id``/``file_name``, ``annotations`` with ``id``/``image_id``/``caption``).
``ROOT/annotations/coco_{train,dev,test,restval}_ids.npy`` list caption annotation ids,
``captions_per_image`` consecutive ids per image, in the order the split serves its images; dev is
the val split. An id may come from either captions file, and its image lives in
``ROOT/images/train2014`` or ``ROOT/images/val2014`` after the file it came from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hat.data.problems import DatasetError
from hat.data.records import SPLIT_NAMES, ImageRecord, SplitRecords
from hat.data.text import CaptionCleaner, read_json

CAPTION_FILES = {"train2014": "annotations/captions_train2014.json", "val2014": "annotations/captions_val2014.json"}
ID_FILES = {
    "train": "annotations/coco_train_ids.npy",
    "val": "annotations/coco_dev_ids.npy",
    "test": "annotations/coco_test_ids.npy",
    "restval": "annotations/coco_restval_ids.npy",
}
EXPECTED_LAYOUT = (
    "ROOT/annotations/captions_{train,val}2014.json (COCO caption files), "
    "ROOT/annotations/coco_{train,dev,test,restval}_ids.npy (caption annotation ids, 5 consecutive "
    "per image) and ROOT/images/{train2014,val2014}/<file_name>"
)


def id_files(use_restval: bool) -> dict[str, str]:
    """The id file of each split read, relative to the root: ``restval`` only when it joins train."""
    return {split: path for split, path in ID_FILES.items() if use_restval or split != "restval"}


def required_files(use_restval: bool) -> list[str]:
    """Every annotation file the layout needs, relative to the root."""
    return [*CAPTION_FILES.values(), *id_files(use_restval).values()]


class CaptionIndex:
    """The caption files under ``root``: annotation id -> ``(folder, image id, raw caption)`` and
    ``(folder, image id)`` -> file name, where ``folder`` (``train2014``/``val2014``) names the file."""

    def __init__(self, root: Path) -> None:
        self.captions: dict[int, tuple[str, int, object]] = {}
        self.file_names: dict[tuple[str, int], str] = {}
        self.paths = {folder: root / relative for folder, relative in CAPTION_FILES.items()}
        self.image_dirs = {folder: root / "images" / folder for folder in CAPTION_FILES}

    def add_file(self, folder: str, on_bad_text: str) -> list[str]:
        """Index the caption file of ``folder``; returns the entries it had to skip.

        Raises :class:`DatasetError` when the file is not a COCO caption file at all.
        """
        path = self.paths[folder]
        data = read_json(path, on_bad_text)
        if not (isinstance(data, dict) and isinstance(data.get("images"), list)
                and isinstance(data.get("annotations"), list)):
            raise DatasetError(
                [f"{path}: expected a COCO caption file, an object with 'images' and 'annotations' lists"]
            )
        problems = []
        for number, image in enumerate(data["images"]):
            if not (isinstance(image, dict) and isinstance(image.get("id"), int)
                    and isinstance(image.get("file_name"), str)):
                problems.append(f"{path}: images[{number}] needs an integer 'id' and a string 'file_name'")
                continue
            self.file_names[(folder, image["id"])] = image["file_name"]
        for number, annotation in enumerate(data["annotations"]):
            if not (isinstance(annotation, dict) and isinstance(annotation.get("id"), int)
                    and isinstance(annotation.get("image_id"), int) and "caption" in annotation):
                problems.append(f"{path}: annotations[{number}] needs an integer 'id' and 'image_id' and a 'caption'")
                continue
            if annotation["id"] in self.captions:
                other = CAPTION_FILES[self.captions[annotation["id"]][0]]
                problems.append(f"{path}: annotation id {annotation['id']} is also in {other}")
                continue
            self.captions[annotation["id"]] = (folder, annotation["image_id"], annotation["caption"])
        return problems

    def image_name(self, folder: str, image_id: int) -> str:
        return self.file_names.get((folder, image_id), f"image id {image_id} of {CAPTION_FILES[folder]}")


def load_ids(path: Path) -> list[int]:
    """The annotation ids in one ``.npy`` file; :class:`DatasetError` naming it unless a 1-D integer array."""
    try:
        ids = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DatasetError([f"{path}: cannot read as a numpy array: {error}"]) from error
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise DatasetError(
            [f"{path}: expected a 1-D integer array of caption annotation ids, got shape {ids.shape} dtype {ids.dtype}"]
        )
    return ids.tolist()


def read_vsepp_records(
    root: Path, captions_per_image: int, use_restval: bool = True, on_bad_text: str = "error"
) -> tuple[SplitRecords, list[str]]:
    """The ``train``/``val``/``test`` records of the VSE++ layout under ``root``, and the problems found.

    ``restval`` images follow ``train``'s when ``use_restval``. A group of ids that spans several
    images, names an unknown id, or holds an unusable caption is a problem and its image is left
    out. Raises :class:`DatasetError` listing every file that cannot be read at all.
    """
    index = CaptionIndex(root)
    problems: list[str] = []
    unreadable: list[str] = []
    for folder in CAPTION_FILES:
        try:
            problems += index.add_file(folder, on_bad_text)
        except DatasetError as error:
            unreadable += error.problems
    ids = {}
    for split, relative in id_files(use_restval).items():
        try:
            ids[split] = load_ids(root / relative)
        except DatasetError as error:
            unreadable += error.problems
    if unreadable:
        raise DatasetError(unreadable + problems)
    clean = CaptionCleaner(on_bad_text)
    groups = {
        split: _read_groups(root / ID_FILES[split], split_ids, captions_per_image, index, clean)
        for split, split_ids in ids.items()
    }
    clean.log_summary(str(root / "annotations"))
    records: SplitRecords = {split: groups[split][0] for split in SPLIT_NAMES}
    if "restval" in groups:
        records["train"] = records["train"] + groups["restval"][0]
    return records, problems + [problem for _, group_problems in groups.values() for problem in group_problems]


def _read_groups(
    path: Path, ids: list[int], captions_per_image: int, index: CaptionIndex, clean: CaptionCleaner
) -> tuple[list[ImageRecord], list[str]]:
    """One record per ``captions_per_image`` consecutive ids of ``path``, and the problems found."""
    records, problems = [], []
    if len(ids) % captions_per_image:
        problems.append(
            f"{path}: {len(ids)} ids is not a multiple of {captions_per_image} (captions per image); "
            f"the last {len(ids) % captions_per_image} are ignored"
        )
    for start in range(0, len(ids) - captions_per_image + 1, captions_per_image):
        group = ids[start : start + captions_per_image]
        entry = f"index {start}-{start + captions_per_image - 1}"
        record, group_problems = _read_group(
            f"{path}: {entry} (ids {group})", f"{entry} of {path}", group, index, clean
        )
        problems += group_problems
        if record is not None:
            records.append(record)
    return records, problems


def _read_group(
    where: str, entry: str, group: list[int], index: CaptionIndex, clean: CaptionCleaner
) -> tuple[ImageRecord | None, list[str]]:
    """The record of one image's caption ids, or ``None`` and the problems.

    ``where`` names the group in problems, ``entry`` in the record (:attr:`ImageRecord.entry`).
    """
    unknown = [ann_id for ann_id in group if ann_id not in index.captions]
    if unknown:
        return None, [f"{where}: id(s) {unknown} are in neither {' nor '.join(CAPTION_FILES.values())}"]
    images = list(dict.fromkeys(index.captions[ann_id][:2] for ann_id in group))
    if len(images) > 1:
        names = ", ".join(index.image_name(*image) for image in images)
        return None, [
            f"{where}: the ids belong to {len(images)} images ({names}); each {len(group)} consecutive ids "
            f"must be the captions of one image"
        ]
    folder, image_id = images[0]
    captions_path = index.paths[folder]
    file_name = index.file_names.get((folder, image_id))
    if file_name is None:
        return None, [f"{where}: image id {image_id} is not in the 'images' of {captions_path}"]
    captions, problems = [], []
    for ann_id in group:
        caption, why = clean(index.captions[ann_id][2])
        if why:
            problems.append(f"{captions_path}: annotation {ann_id} (image {file_name}): caption {why}")
        else:
            captions.append(caption)
    if problems:
        return None, problems
    return ImageRecord(file_name, tuple(captions), index.image_dirs[folder] / file_name, entry=entry), []
