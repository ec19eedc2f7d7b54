"""How a stopped training words its error: one line, the original message of a loader worker's error."""

from __future__ import annotations

from pathlib import Path

from hat.data.records import BadImageError
from hat.engine.failures import bad_training_image, diverged, last_line


def _from_worker(message: str) -> RuntimeError:
    return RuntimeError("Caught OSError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
                        f"last):\n  File \"x.py\", line 1\n{message}")


def test_a_loader_worker_error_is_shown_as_its_own_last_line():
    assert last_line(_from_worker("OSError: /data/img.jpg: image file is truncated")) == \
        "OSError: /data/img.jpg: image file is truncated"
    assert last_line(_from_worker("hat.data.records.BadImageError: /data/img.jpg: empty file")) == \
        "/data/img.jpg: empty file"
    assert last_line(ValueError("plain")) == "plain"


def test_the_messages_name_the_step_and_what_was_kept():
    error = diverged(float("nan"), 7, 1, 2, Path("run/checkpoints/last.pt"), 5)
    assert "loss is nan at step 7 (epoch 1, batch 2)" in str(error) and "last.pt (step 5) is kept" in str(error)
    assert "no checkpoint had been written yet" in str(diverged(float("inf"), 1, 0, 1, Path("last.pt"), None))
    bad = bad_training_image(BadImageError("/data/img.jpg: empty file"), Path("run/last.pt"), 12)
    assert "/data/img.jpg: empty file" in str(bad) and "run/last.pt holds step 12" in str(bad)
