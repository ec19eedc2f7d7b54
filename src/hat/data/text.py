"""Annotation text: JSON files read as UTF-8 bytes, and captions checked before any training.

Bad text is caught here, at start-up, with the file and place named, instead of as a crash in a
data-loader worker or the tokenizer. ``on_bad_text`` (``dataset.on_bad_text``) decides what
bytes that are not UTF-8 do: ``"error"`` stops with their byte offsets, ``"replace"`` turns them
into U+FFFD in the captions and counts the captions affected.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from hat.data.problems import MAX_LISTED, DatasetError

log = logging.getLogger(__name__)

BAD_TEXT_MODES = ("error", "replace")
LONG_CAPTION_WORDS = 30  # more words than this is more than 32 tokens: the tokenizer cuts the caption
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def read_json(path: Path, on_bad_text: str) -> object:
    """Parse ``path`` as UTF-8 JSON (a leading BOM is allowed); :class:`DatasetError` naming it if it cannot be.

    With ``on_bad_text="error"`` invalid UTF-8 is an error giving the byte offsets of the first
    invalid bytes and their count. With ``"replace"`` they decode as lone surrogates
    (``surrogateescape``), which :class:`CaptionCleaner` replaces in captions; in file names
    they map back to the original bytes.
    """
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DatasetError([f"{path}: cannot read: {error}"]) from error
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("utf-8-sig", "surrogateescape")
        if on_bad_text == "error":
            raise DatasetError([_invalid_utf8_problem(path, data, len(_ESCAPED_BYTE.findall(text)))]) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise DatasetError([f"{path}: not valid JSON: {error}"]) from error


def _invalid_utf8_problem(path: Path, data: bytes, bad_bytes: int) -> str:
    offsets = invalid_utf8_offsets(data, MAX_LISTED + 1)
    listed = ", ".join(map(str, offsets[:MAX_LISTED])) + (" ..." if len(offsets) > MAX_LISTED else "")
    return (
        f"{path}: {bad_bytes} byte(s) are not valid UTF-8, at byte offset(s) {listed}; fix the file, "
        f"or set dataset.on_bad_text=replace to replace them with U+FFFD"
    )


def invalid_utf8_offsets(data: bytes, limit: int) -> list[int]:
    """Byte offsets of the first ``limit`` invalid UTF-8 sequences in ``data``."""
    offsets: list[int] = []
    view, start = memoryview(data), 0
    while len(offsets) < limit:
        try:
            str(view[start:], "utf-8")
            break
        except UnicodeDecodeError as error:
            offsets.append(start + error.start)
            start += error.end
    return offsets


class CaptionCleaner:
    """Strips captions and says why one is unusable; counts what it replaced and what will be cut.

    A caption must be a string that is not empty after stripping whitespace. Text that is not
    valid Unicode (invalid UTF-8 bytes, or a lone surrogate from a JSON ``\\u`` escape, which the
    tokenizer cannot encode) is unusable with ``on_bad_text="error"`` and replaced by U+FFFD with
    ``"replace"``.
    """

    def __init__(self, on_bad_text: str) -> None:
        self.on_bad_text = on_bad_text
        self.replaced = 0
        self.long = 0

    def __call__(self, raw: object) -> tuple[str | None, str | None]:
        """``(caption, None)`` for a usable caption, ``(None, why it is not)`` otherwise."""
        if not isinstance(raw, str):
            return None, f"is not a string (got {type(raw).__name__})"
        caption = raw.strip()
        if not caption:
            return None, f"is empty or whitespace only ({raw!r})"
        if _SURROGATE.search(caption):
            if self.on_bad_text == "error":
                return None, f"is not valid Unicode ({caption!r})"
            caption = _SURROGATE.sub("\ufffd", caption)
            self.replaced += 1
        if len(caption.split()) > LONG_CAPTION_WORDS:
            self.long += 1
        return caption, None

    def log_summary(self, source: str) -> None:
        """Log how many captions of ``source`` had bad text replaced and how many will be truncated."""
        if self.replaced:
            log.warning(
                "%s: replaced invalid text with U+FFFD in %d caption(s) (dataset.on_bad_text=replace)",
                source, self.replaced,
            )
        if self.long:
            log.info(
                "%s: %d caption(s) have more than %d words; the tokenizer truncates them to "
                "encoder.text.max_length tokens", source, self.long, LONG_CAPTION_WORDS,
            )
