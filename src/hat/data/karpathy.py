"""Flickr30K and MSCOCO in the Karpathy-split JSON layout (DESIGN.md §4)."""

from __future__ import annotations

import json
from pathlib import Path

from hat.data.records import CaptionedImages, ImageRecord, load_image_file

ANNOTATION_FILES = {"f30k": "dataset_flickr30k.json", "coco": "dataset_coco.json"}
EXPECTED_LAYOUT = {
    "f30k": "ROOT/dataset_flickr30k.json (Karpathy split) and ROOT/images/<filename>",
    "coco": "ROOT/dataset_coco.json (Karpathy split) and ROOT/images/<filepath>/<filename> "
    "(images/train2014, images/val2014)",
}
SPLIT_NAMES = ("train", "val", "test")


def annotation_path(name: str, root: Path) -> Path:
    return root / ANNOTATION_FILES[name]


def read_karpathy_splits(
    name: str, root: Path, captions_per_image: int, extra_captions: str = "error", use_restval: bool = True
) -> dict[str, CaptionedImages]:
    """Read ``train``/``val``/``test`` of a Karpathy JSON under ``root``.

    ``restval`` images join ``train`` when ``use_restval``. An image with fewer than
    ``captions_per_image`` captions is an error naming it; with more, ``extra_captions="truncate"``
    keeps the first ones (COCO's convention) and ``"error"`` rejects it.
    """
    path = annotation_path(name, root)
    try:
        images = json.loads(path.read_text(encoding="utf-8"))["images"]
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"cannot read {path} as a Karpathy split JSON with an 'images' list: {error}") from error
    buckets: dict[str, list[ImageRecord]] = {split: [] for split in SPLIT_NAMES}
    problems = []
    for index, entry in enumerate(images):
        split = entry.get("split")
        if split == "restval":
            if not use_restval:
                continue
            split = "train"
        if split not in buckets:
            problems.append(f"images[{index}] ({entry.get('filename')}): unknown split {split!r}")
            continue
        captions = tuple(sentence["raw"].strip() for sentence in entry.get("sentences", []))
        if len(captions) > captions_per_image and extra_captions == "truncate":
            captions = captions[:captions_per_image]
        if len(captions) != captions_per_image:
            problems.append(
                f"images[{index}] ({entry.get('filename')}): {len(captions)} captions, expected {captions_per_image}"
            )
            continue
        image_path = root / "images" / entry.get("filepath", "") / entry["filename"]
        buckets[split].append(ImageRecord(key=entry["filename"], captions=captions, path=image_path))
    if problems:
        shown = "\n  ".join(problems[:20])
        raise ValueError(f"{path}: {len(problems)} problem(s) found:\n  {shown}")
    return {
        split: CaptionedImages(split, records, captions_per_image, load_image_file)
        for split, records in buckets.items()
    }
