"""The benchmarks in bench/ run on the CPU at toy sizes and write the JSON their tables come from.

They are scripts, not a package: each is loaded from its file and its ``main(argv)`` called. The
sizes here check that they run and what their rows mean, not speed.
"""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest

from conftest import ROOT, TINY_RUN, compose_config


def run_benchmark(name: str, tmp_path, *argv: str) -> dict:
    out = tmp_path / f"{name}.json"
    runpy.run_path(str(ROOT / "bench" / f"{name}.py"), run_name="bench")["main"]([*argv, "--out", str(out)])
    return json.loads(out.read_text())


def rows_by(result: dict) -> list[dict]:
    return [dict(zip(result["columns"], row)) for row in result["rows"]]


@pytest.mark.slow
def test_alignment_benchmark_compares_the_fast_path_with_the_loop(tmp_path):
    result = run_benchmark("alignment", tmp_path, "--images", "4", "--captions", "10", "--regions", "16",
                           "--repeats", "1", "--methods", "loop,blocked")
    rows = rows_by(result)
    assert [(r["direction"], r["method"]) for r in rows] == [
        ("i2t", "loop"), ("i2t", "blocked"), ("t2i", "loop"), ("t2i", "blocked")
    ]
    assert all(r["median s"] > 0 for r in rows)
    assert all(r["max rel err vs loop"] < 1e-5 for r in rows)
    assert result["machine"].startswith("CPU")


def test_evaluation_benchmark_scores_both_protocols_of_synthetic_features(tmp_path):
    rows = rows_by(run_benchmark("evaluation", tmp_path, "--images", "10", "--dim", "32"))
    assert [(r["dataset"], r["images"], r["captions"]) for r in rows] == [("f30k", 10, 50), ("coco5k", 10, 50)]
    assert all(r["rsum"] > 300 for r in rows)  # captions are built near their image: far above chance (about 60)


def test_train_step_benchmark_trains_the_tiny_model_with_and_without_frozen_encoders(tmp_path):
    rows = rows_by(run_benchmark("train_step", tmp_path, "--model", "tiny", "--batch", "4", "--image-size", "32",
                                 "--steps", "1", "--warmup", "1"))
    assert [(r["encoders"], r["compile"]) for r in rows] == [("trained", "no"), ("frozen", "no")]
    assert all(r["samples/s"] > 0 for r in rows)


def test_data_pipeline_benchmark_measures_both_decode_paths(tmp_path):
    rows = rows_by(run_benchmark("data_pipeline", tmp_path, "--images", "8", "--batch", "4", "--workers", "0",
                                 "--image-size", "32"))
    assert [r["pipeline"] for r in rows] == [
        "image_decode=cpu: decode + crop in workers, 0 workers",
        "image_decode=device: read + draw crop in workers, 0 workers",
        "image_decode=device: decode + crop on cpu",
    ]
    assert all(r["images/s"] > 0 for r in rows)


@pytest.fixture
def one_step_checkpoint(tmp_path) -> Path:
    """The checkpoint of a tiny model trained for one step: the benchmark times the search, whatever
    the model retrieves (the well-trained ``retrieving_run`` took a minute or more to make). The
    tiny encoder's own 64 px images, so that 12 of them give a cache of more than 0.05 MiB."""
    from hat.engine.loop import train

    overrides = [item for item in TINY_RUN if not item.startswith("encoder.image.image_size")]
    run_dir = tmp_path / "run"
    train(compose_config("train", [*overrides, "train.epochs=1", "train.max_steps=1", "logger=none"]), run_dir)
    return run_dir / "checkpoints" / "last.pt"


@pytest.mark.slow
def test_search_benchmark_times_the_cache_and_the_ranking(tmp_path, one_step_checkpoint):
    result = run_benchmark("search", tmp_path, "--checkpoint", str(one_step_checkpoint),
                           "--images", "12", "--shard-size", "5", "--device", "cpu")
    rows = rows_by(result)
    assert [r["stage"] for r in rows] == ["encode into the cache", "cache check, nothing changed",
                                          "rank for 1 query", "rank for 10 queries"]
    assert all(r["images"] == 12 and r["s"] > 0 for r in rows)
    assert all(r["images/s"] == pytest.approx(r["images"] / r["s"]) for r in rows)
    assert result["settings"]["cache_MiB"] > 0


@pytest.mark.slow
def test_quickstart_seeds_benchmark_reports_each_seed_and_the_spread(tmp_path):
    """Two seeds of a shrunken quickstart: one row per seed with its rsums read from results.json,
    then min, median, max and mean ± sd over them."""
    tiny = [item for item in TINY_RUN if not item.startswith(("dataset=", "optim."))]
    result = run_benchmark("quickstart_seeds", tmp_path, "--seeds", "0,1", *tiny, "train.epochs=1")
    assert result["columns"] == ["run", "test/rsum", "test/level1/rsum", "test/level2/rsum", "test/level3/rsum",
                                 "seconds"]
    rows = rows_by(result)
    assert [r["run"] for r in rows] == ["seed=0", "seed=1", "min", "median", "max", "mean ± sd"]
    seeds = rows[:2]
    assert seeds[0]["test/rsum"] != seeds[1]["test/rsum"]  # the seed reaches the run
    for column in result["columns"][1:-1]:
        low, middle, high = (rows[i][column] for i in (2, 3, 4))
        assert low == min(r[column] for r in seeds) and high == max(r[column] for r in seeds)
        assert middle == pytest.approx((low + high) / 2)
    assert result["settings"]["command"].startswith("python train.py experiment=quickstart seed=S logger=none")
