"""Flickr30K and MSCOCO in the Karpathy-split JSON layout (docs/data.md).

The JSON is checked whole before training: every unusable image entry (unknown split, wrong
caption count, empty or invalid caption) is reported, each naming the file, the entry's index and
its file name.
"""

from __future__ import annotations

from pathlib import Path

from hat.data.problems import DatasetError
from hat.data.records import SPLIT_NAMES, ImageRecord, SplitRecords
from hat.data.text import CaptionCleaner, read_json

ANNOTATION_FILES = {"f30k": "dataset_flickr30k.json", "coco": "dataset_coco.json"}
EXPECTED_LAYOUT = {
    "f30k": "ROOT/dataset_flickr30k.json (Karpathy split) and ROOT/images/<filename>",
    "coco": "ROOT/dataset_coco.json (Karpathy split) and ROOT/images/<filepath>/<filename> "
    "(images/train2014, images/val2014)",
}


def annotation_path(name: str, root: Path) -> Path:
    return root / ANNOTATION_FILES[name]


def read_karpathy_records(
    name: str,
    root: Path,
    captions_per_image: int,
    extra_captions: str = "error",
    use_restval: bool = True,
    on_bad_text: str = "error",
) -> tuple[SplitRecords, list[str]]:
    """The ``train``/``val``/``test`` records of the Karpathy JSON under ``root``, and the problems found.

    ``restval`` images join ``train`` when ``use_restval``. An image with fewer than
    ``captions_per_image`` captions is a problem naming it; with more, ``extra_captions="truncate"``
    keeps the first ones (COCO's convention) and ``"error"`` rejects it. Images with problems are
    left out of the records. Raises :class:`DatasetError` when the file itself cannot be read.
    """
    path = annotation_path(name, root)
    data = read_json(path, on_bad_text)
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise DatasetError([f"{path}: expected a Karpathy split JSON, an object with an 'images' list"])
    clean = CaptionCleaner(on_bad_text)
    records: SplitRecords = {split: [] for split in SPLIT_NAMES}
    problems = []
    for index, entry in enumerate(images):
        if not isinstance(entry, dict):
            problems.append(f"{path}: images[{index}] is not an object")
            continue
        where = f"{path}: images[{index}] ({entry.get('filename')})"
        split = entry.get("split")
        if split == "restval":
            if not use_restval:
                continue
            split = "train"
        if split not in records:
            problems.append(f"{where}: unknown split {split!r}")
            continue
        if not isinstance(entry.get("filename"), str):
            problems.append(f"{where}: no 'filename' string")
            continue
        captions, caption_problems = _entry_captions(entry, captions_per_image, extra_captions, clean)
        problems += [f"{where}: {problem}" for problem in caption_problems]
        if not caption_problems:
            image_path = root / "images" / str(entry.get("filepath") or "") / entry["filename"]
            records[split].append(
                ImageRecord(
                    key=entry["filename"], captions=captions, path=image_path, entry=f"images[{index}] of {path}"
                )
            )
    clean.log_summary(str(path))
    return records, problems


def _entry_captions(
    entry: dict, captions_per_image: int, extra_captions: str, clean: CaptionCleaner
) -> tuple[tuple[str, ...], list[str]]:
    """The cleaned captions of one image entry, and what makes the entry unusable (empty if nothing)."""
    sentences = entry.get("sentences")
    if not isinstance(sentences, list):
        return (), ["no 'sentences' list"]
    if len(sentences) > captions_per_image and extra_captions == "truncate":
        sentences = sentences[:captions_per_image]
    problems = []
    if len(sentences) != captions_per_image:
        problems.append(f"{len(sentences)} captions, expected {captions_per_image}")
    captions = []
    for number, sentence in enumerate(sentences):
        caption, why = clean(sentence.get("raw") if isinstance(sentence, dict) else sentence)
        if why:
            problems.append(f"caption {number} {why}")
        else:
            captions.append(caption)
    return tuple(captions), problems
