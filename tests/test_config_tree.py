"""The config tree printed at the start of a run: every section, resolved, in reading order."""

from __future__ import annotations

import io

from conftest import compose_config
from hat.config_tree import print_config_tree


def printed(*overrides) -> str:
    out = io.StringIO()
    print_config_tree(compose_config("train", list(overrides)), out)
    return out.getvalue()


def test_every_section_is_a_branch_in_reading_order_with_the_top_level_values_last():
    text = printed("experiment=quickstart")
    branches = [line.split("── ")[1] for line in text.splitlines() if line.startswith(("├── ", "└── "))]
    assert branches[:6] == ["dataset", "encoder", "alignment", "loss", "optim", "train"]
    assert branches[-1] == "run" and {"hardware", "logger", "paths", "eval"} <= set(branches)
    assert "seed: 0" in text


def test_values_are_resolved_and_short_lists_stay_on_one_line():
    text = printed("dataset=coco", "paths.coco=/data/mscoco", "alignment.levels=[4,8,12]")
    assert "root: /data/mscoco" in text and "${" not in text
    assert "levels: [4, 8, 12]" in text


def test_a_file_gets_no_colour_codes():
    assert "\033[" not in printed()
