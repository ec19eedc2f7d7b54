"""What ``search.py`` does, without Hydra: validate the request, search, print, write the outputs."""

from __future__ import annotations

import json
from pathlib import Path

from hat.atomic import atomic_write
from hat.checks import ConfigError, require_int
from hat.kernels.dispatch import check_kernel_choice
from hat.retriever import Retriever
from hat.search.contact_sheet import contact_sheet
from hat.search.feature_cache import build_cache, default_cache_dir, read_shards
from hat.search.ranking import Hit, rank_images, rank_texts

SHEET_FILE = "contact_sheet.png"
RESULTS_FILE = "search.json"


def search_mode(cfg) -> str:
    """``images`` (text queries over a folder) or ``captions`` (lines of a file for one image);
    any other combination of ``images``/``query``/``captions``/``image``, or a bad number or
    ``eval.kernel``, raises ConfigError."""
    for field in ("top_k", "shard_size", "batch_size", "thumbnail"):
        require_int(field, cfg[field], 1)
    check_kernel_choice(cfg.eval.kernel if "eval" in cfg else "auto")
    if cfg.images and cfg.query and not (cfg.captions or cfg.image):
        return "images"
    if cfg.captions and cfg.image and not (cfg.images or cfg.query):
        return "captions"
    raise ConfigError(
        "search needs images=DIR query=\"TEXT\" (or query=[TEXT,TEXT]) to rank images, or captions=FILE "
        f"image=PATH to rank the lines of a text file; got images={cfg.images}, query={cfg.query}, "
        f"captions={cfg.captions}, image={cfg.image}"
    )


def search_images(retriever: Retriever, cfg, out_dir: Path) -> list[list[Hit]]:
    """Rank the images under ``cfg.images`` for each of ``cfg.query``; print the ranking and write
    ``search.json`` and the contact sheet into ``out_dir``."""
    folder = Path(cfg.images)
    queries = [cfg.query] if isinstance(cfg.query, str) else [str(q) for q in cfg.query]
    cache = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    shards = build_cache(retriever, folder, cache, cfg.shard_size, cfg.batch_size, cfg.num_workers, cfg.progress)
    results = rank_images(retriever, read_shards(shards, retriever.runtime.device), retriever.encode_texts(queries),
                          cfg.top_k)
    for query, hits in zip(queries, results):
        _print_hits(f"“{query}”", hits)
    _write_json(out_dir / RESULTS_FILE, {"images": str(folder), "results": dict(zip(queries, _plain(results)))})
    sheet = contact_sheet(queries, results, folder, cfg.thumbnail)
    sheet.save(out_dir / SHEET_FILE)
    print(f"\ncontact sheet: {out_dir / SHEET_FILE}")
    return results


def search_captions(retriever: Retriever, cfg, out_dir: Path) -> list[Hit]:
    """Rank the non-empty lines of ``cfg.captions`` for the image ``cfg.image``; print and write ``search.json``."""
    path = Path(cfg.captions)
    if not path.is_file():
        raise FileNotFoundError(f"captions={path}: no such file")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise ConfigError(f"captions={path} has no non-empty lines to rank")
    hits = rank_texts(retriever, retriever.encode_images([cfg.image]), lines, cfg.top_k, cfg.batch_size)
    _print_hits(str(cfg.image), hits)
    _write_json(out_dir / RESULTS_FILE, {"image": str(cfg.image), "captions": str(path), "results": _plain([hits])[0]})
    return hits


def _print_hits(title: str, hits: list[Hit]) -> None:
    print(f"\n{title}")
    for rank, hit in enumerate(hits, start=1):
        levels = "  ".join(f"level{k} {value:.3f}" for k, value in enumerate(hit.level_scores, start=1))
        print(f"{rank:4d}. {hit.score:.4f}  {hit.item}   ({levels})")


def _plain(results: list[list[Hit]]) -> list[list[dict]]:
    return [[{"item": h.item, "score": h.score, "level_scores": h.level_scores} for h in hits] for hits in results]


def _write_json(path: Path, payload: dict) -> None:
    text = json.dumps(payload, indent=2, ensure_ascii=False)
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))
