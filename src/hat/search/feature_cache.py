"""Image features of a folder, encoded once and kept on disk (float16 safetensors shards).

The images under a folder (recursively, sorted by relative path) are cut into shards of
``shard_size``. A shard's file name is a hash of the model's fingerprint (checkpoint path, size
and modification time, image size, device type and precision) and of its images' relative paths,
sizes and modification times, so a shard is reused exactly while none of these change, and a
changed, added or removed file re-encodes only the shards it touches (and, for additions and
removals, the shards after it). Shards of a folder that no longer match are deleted. Scoring reads
one shard at a time: memory holds one block of features, however many images the folder has.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from hat.atomic import atomic_write
from hat.data.records import BadImageError
from hat.features import encode_image_batch
from hat.retriever import ImageFeatures, Retriever, as_rgb

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SHARD_PATTERN = "shard-*.safetensors"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/hat/features``, else ``~/.cache/hat/features``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hat" / "features"


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (by suffix, hidden folders skipped), sorted by relative path."""
    if not folder.is_dir():
        raise FileNotFoundError(f"images={folder}: no such folder")
    found = sorted(
        path.relative_to(folder)
        for path in folder.rglob("*")
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )
    if not found:
        raise FileNotFoundError(f"images={folder} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    return found


def model_fingerprint(retriever: Retriever) -> str:
    """What the features depend on besides the images: the weights' files and how they are run."""
    source = retriever.source.path.resolve()
    files = sorted(source.iterdir()) if source.is_dir() else [source]
    stamps = [(str(path), path.stat().st_size, path.stat().st_mtime_ns) for path in files if path.is_file()]
    runtime = retriever.runtime
    return json.dumps([stamps, retriever.image_size, runtime.device.type, runtime.precision])


@dataclass(frozen=True)
class Shard:
    """One cached block: its file, the relative paths of the images it holds, in order, and why
    the images it left out could not be read."""

    path: Path
    images: list[str]
    skipped: list[str]


class _FolderImages(Dataset):
    """Pixels of some images of a folder; an image that cannot be read gives ``None`` and a warning."""

    def __init__(self, folder: Path, names: list[Path], retriever: Retriever) -> None:
        self.folder, self.names, self.retriever = folder, names, retriever

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int):
        try:
            return index, self.retriever.pixels([as_rgb(self.folder / self.names[index])])[0]
        except BadImageError as error:
            return index, str(error)


def build_cache(
    retriever: Retriever, folder: Path, cache_dir: Path, shard_size: int = 256, batch_size: int = 64,
    num_workers: int = 0, progress: bool = True,
) -> list[Shard]:
    """Encode the images under ``folder`` that have no valid shard yet and return every shard, in order.

    Images that cannot be read are left out with a warning that names each, repeated whenever
    their shard is used; a shard is encoded again only when one of its files changes.
    """
    names = list_images(folder)
    fingerprint = model_fingerprint(retriever)
    home = cache_dir / hashlib.sha256(f"{folder.resolve()}\n{fingerprint}".encode()).hexdigest()[:16]
    home.mkdir(parents=True, exist_ok=True)
    planned = []
    for start in range(0, len(names), shard_size):
        chunk = names[start : start + shard_size]
        stamps = [(str(name), (folder / name).stat().st_size, (folder / name).stat().st_mtime_ns) for name in chunk]
        digest = hashlib.sha256(json.dumps([fingerprint, stamps]).encode()).hexdigest()[:24]
        planned.append((home / f"shard-{digest}.safetensors", chunk))
    missing = [(path, chunk) for path, chunk in planned if not path.is_file()]
    todo = sum(len(chunk) for _, chunk in missing)
    log.info(
        "%d images under %s: %d cached, %d to encode (cache %s)", len(names), folder, len(names) - todo, todo, home
    )
    with tqdm(total=todo, unit="img", desc="encoding images", disable=not progress or todo == 0) as bar:
        for path, chunk in missing:
            _encode_shard(retriever, folder, chunk, path, batch_size, num_workers, bar)
    keep = {path for path, _ in planned}
    for stale in home.glob(SHARD_PATTERN):
        if stale not in keep:
            stale.unlink()
    shards = [Shard(path, *_shard_contents(path)) for path, _ in planned]
    for problem in (problem for shard in shards for problem in shard.skipped):
        log.warning("left out of the search: %s", problem)
    return shards


def _encode_shard(retriever, folder, chunk, path, batch_size, num_workers, bar) -> None:
    """Encode ``chunk`` (relative paths) and write its shard to ``path`` atomically."""
    loader = DataLoader(_FolderImages(folder, chunk, retriever), batch_size=batch_size, num_workers=num_workers,
                        collate_fn=list)
    kept, levels, skipped = [], [], []
    for batch in loader:
        good = [(index, pixels) for index, pixels in batch if not isinstance(pixels, str)]
        skipped += [problem for _, problem in batch if isinstance(problem, str)]
        if good:
            encoded = encode_image_batch(retriever.model, torch.stack([p for _, p in good]), retriever.runtime)
            levels.append([level.cpu() for level in encoded])
            kept += [str(chunk[index]) for index, _ in good]
        bar.update(len(batch))
    tensors = {f"level{k}": torch.cat([batch[k - 1] for batch in levels]).contiguous()
               for k in range(1, retriever.num_levels + 1)} if levels else {}
    payload = save(tensors, metadata={"images": json.dumps(kept), "skipped": json.dumps(skipped)})
    atomic_write(path, lambda handle: handle.write(payload))


def _shard_contents(path: Path) -> tuple[list[str], list[str]]:
    """(the images a shard holds, the problems of the images it left out)."""
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    return json.loads(metadata["images"]), json.loads(metadata["skipped"])


def read_shards(shards: list[Shard], device: torch.device) -> Iterator[tuple[list[str], ImageFeatures]]:
    """Each non-empty shard's image names and features on ``device``, one shard at a time."""
    for shard in shards:
        if not shard.images:
            continue
        with safe_open(str(shard.path), framework="pt", device=str(device)) as handle:
            count = sum(1 for key in handle.keys() if key.startswith("level"))
            yield shard.images, ImageFeatures([handle.get_tensor(f"level{k}") for k in range(1, count + 1)])
