"""The start-up check of a dataset's image files, so a bad file stops or is dropped before training.

Every file is checked with one ``stat`` (missing, not a file, empty: about a second for COCO on a
local disk). The val and test images, a few thousand, are also decoded once here as the loader
would (``Image.verify`` alone would pass a truncated JPEG), so a bad one stops the run before
training rather than at the first validation or at the final test. Train images are decoded only
with ``dataset.skip_bad_images=true``, a full pass over the files; without it a train file that
does not decode fails when it is loaded, with a :class:`~hat.data.records.BadImageError` naming it.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from hat.data.records import BadImageError, ImageRecord, SplitRecords, file_problem, load_image_file

log = logging.getLogger(__name__)

DECODE_THREADS = 16  # decoding releases the GIL; a stat is too quick to gain from threads on a local disk
EXAMPLES_LOGGED = 5


def check_image_files(records: SplitRecords, skip_bad: bool) -> tuple[SplitRecords, list[str]]:
    """``(records, problems)``: without ``skip_bad`` every bad file is a problem naming its path, why and split.

    A file is bad when it is missing, not a file or empty, or (for val and test, and for every
    split with ``skip_bad``) when it does not decode or is a possible decompression bomb. With
    ``skip_bad`` there are no problems: records whose file is bad are dropped, and a warning gives
    their count per split and a few of them.
    """
    verdicts = {
        split: _verdicts(split_records, decode=skip_bad or split != "train") for split, split_records in records.items()
    }
    if not skip_bad:
        return records, [
            f"{record.path}: {why} ({split} image {record.key})"
            for split, split_records in records.items()
            for record, why in zip(split_records, verdicts[split])
            if why
        ]
    _log_skipped(
        {split: [(record, why) for record, why in zip(records[split], verdicts[split]) if why] for split in records}
    )
    kept = {split: [record for record, why in zip(records[split], verdicts[split]) if not why] for split in records}
    return kept, []


def _verdicts(records: list[ImageRecord], decode: bool) -> list[str | None]:
    """Why each record's file cannot be used, or ``None``: by its ``stat``, and also by decoding it when ``decode``."""
    if not decode:
        return [file_problem(record.path) for record in records]
    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        return list(pool.map(_unusable, records))


def _unusable(record: ImageRecord) -> str | None:
    """Why the record's image cannot be used, loading it as the loader would (:func:`load_image_file`), or ``None``."""
    try:
        load_image_file(record)
    except BadImageError as error:
        return error.reason
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
