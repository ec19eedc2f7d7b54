"""Search over a folder of images: encoding into the feature cache, reusing it, and ranking queries.

    python bench/search.py --checkpoint runs/qs/checkpoints/best.pt --images 1000

Writes ``--images`` generated shapes images (the checkpoint's dataset config, as a test split of
that size) as PNG files, then times what ``search.py`` does: encoding every image into the cache
(cold), checking the cache when nothing changed (warm), and ranking the folder for one query and
for ten, reading one cached shard at a time. "peak host MiB" is the growth of the resident set
during the stage; the cache's size on disk is given for comparison.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hat  # noqa: E402
from common import PeakResident, mib, report  # noqa: E402
from hat.data.build import build_splits  # noqa: E402
from hat.data.spec import data_spec  # noqa: E402
from hat.data.split_folder import write_split_folder  # noqa: E402
from hat.search.feature_cache import build_cache, read_shards  # noqa: E402
from hat.search.ranking import rank_images  # noqa: E402

QUERIES = ["a big red circle", "two small blue squares", "a green triangle on a dark background",
           "one white cross", "a purple diamond and a yellow disc", "three shapes on a light background",
           "a small orange square at the top", "a black circle", "a large blue triangle", "two red crosses"]


def _timed(rows: list, images: int, stage: str, work) -> object:
    with PeakResident() as resident:
        base = resident.peak
        start = time.perf_counter()
        result = work()
        seconds = time.perf_counter() - start
    rows.append([images, stage, seconds, images / seconds, mib(resident.peak - base)])
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a .pt checkpoint trained on shapes")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    retriever = hat.load(args.checkpoint, device=args.device)
    dataset = OmegaConf.merge(retriever.config.dataset, {"num_test": args.images})
    rows: list[list] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder, cache = Path(tmp) / "images", Path(tmp) / "cache"
        write_split_folder(build_splits(data_spec(dataset), retriever.config.seed)["test"], folder)

        def index():
            return build_cache(retriever, folder, cache, args.shard_size, progress=False)

        shards = _timed(rows, args.images, "encode into the cache", index)
        _timed(rows, args.images, "cache check, nothing changed", index)
        for count in (1, len(QUERIES)):
            queries = retriever.encode_texts(QUERIES[:count])
            _timed(rows, args.images, f"rank for {count} quer{'y' if count == 1 else 'ies'}",
                   lambda q=queries: rank_images(retriever, read_shards(shards, retriever.runtime.device), q, 10))
        cache_bytes = sum(shard.path.stat().st_size for shard in shards)
    settings = {"checkpoint": str(args.checkpoint), "shard_size": args.shard_size,
                "cache_MiB": round(mib(cache_bytes), 1), "precision": retriever.runtime.precision}
    report("search", retriever.runtime.device, settings, ["images", "stage", "s", "images/s", "peak host MiB"],
           rows, args.out)


if __name__ == "__main__":
    main()
