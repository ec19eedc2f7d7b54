"""The start-up check of a dataset's image files, so a bad file stops or is dropped before training.

Every missing file is found with one ``stat`` per image (about a second for COCO on a local
disk). With ``dataset.skip_bad_images=true`` missing files are dropped with their captions, and so
is every file that does not decode: each image is decoded once here, as the loader would, which
is a full pass over the files (``Image.verify`` alone would pass a truncated JPEG).
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor

from hat.data.records import ImageRecord, SplitRecords, load_image_file

log = logging.getLogger(__name__)

DECODE_THREADS = 16  # decoding releases the GIL; a stat is too quick to gain from threads on a local disk
EXAMPLES_LOGGED = 5


def check_image_files(records: SplitRecords, skip_bad: bool) -> tuple[SplitRecords, list[str]]:
    """``(records, problems)``: without ``skip_bad`` every missing file is a problem naming its path.

    With ``skip_bad`` there are no problems: records whose file is missing or does not decode are
    dropped, and a warning gives their count per split and a few of them.
    """
    if not skip_bad:
        return records, [
            f"{record.path}: image file missing ({split} image {record.key})"
            for split, split_records in records.items()
            for record in split_records
            if not os.path.isfile(record.path)
        ]
    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        verdicts = {split: list(pool.map(_unusable, split_records)) for split, split_records in records.items()}
    _log_skipped(
        {split: [(record, why) for record, why in zip(records[split], verdicts[split]) if why] for split in records}
    )
    kept = {split: [record for record, why in zip(records[split], verdicts[split]) if not why] for split in records}
    return kept, []


def _unusable(record: ImageRecord) -> str | None:
    """Why the record's image cannot be used (missing, or does not decode as the loader would), or ``None``."""
    if not os.path.isfile(record.path):
        return "missing"
    try:
        load_image_file(record)
    except OSError as error:
        return str(error.__cause__ or error)
    return None


def _log_skipped(bad: dict[str, list[tuple[ImageRecord, str]]]) -> None:
    """Warn with the number of images skipped per split, and a few of them with the reason."""
    counts = {split: len(pairs) for split, pairs in bad.items() if pairs}
    if not counts:
        return
    examples = [f"{record.path} ({why})" for pairs in bad.values() for record, why in pairs]
    log.warning(
        "skipped %d bad image(s) and their captions (dataset.skip_bad_images=true): %s; e.g. %s%s",
        sum(counts.values()),
        ", ".join(f"{split} {count}" for split, count in counts.items()),
        "; ".join(examples[:EXAMPLES_LOGGED]),
        "; test metrics are not comparable with published ones" if "test" in counts else "",
    )
