"""Image features of a folder, encoded once and kept on disk (float16 safetensors shards).

The images under a folder (recursively, sorted by relative path) are cut into shards of
``shard_size``. A shard's file name is a hash of the model's fingerprint (checkpoint path, size
and modification time, image size, device type and precision) and of its images' relative paths,
sizes and modification times, so a shard is reused exactly while none of these change, and a
changed, added or removed file re-encodes only the shards it touches (and, for additions and
removals, the shards after it). Shards of a folder that no longer match are deleted. Scoring reads
one shard at a time: memory holds one block of features, however many images the folder has.

The cache is only a cache: losing it never costs a search its results. A shard that cannot be read
(truncated, damaged, written by something else, unreadable) is encoded again with a warning that
names the file, and replaced. (Its tensors carry no checksum: a file whose header and sizes are
intact but whose numbers were changed is not noticed; delete the cache folder to rebuild it.) A
cache that cannot be written (a full disk, a read-only one, no permission) stops the search with
one line (:class:`hat.atomic.WriteFailed`, exit 2 from search.py) naming the file, why, and what
to do: free space, make it writable, or point ``cache_dir=`` at another folder. The shards already
written stay. A complete cache on a read-only disk still serves searches: nothing is written then,
and outdated shards that cannot be deleted are named in a warning. A shard that changes while it is
being scored stops the search with one line naming it (search again: it is then encoded again).
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
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from hat.atomic import atomic_write, write_failed
from hat.checks import ConfigError
from hat.data.records import BadImageError
from hat.features import encode_image_batch
from hat.retriever import ImageFeatures, Retriever, as_rgb

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SHARD_PATTERN = "shard-*.safetensors"
ELSEWHERE = "or point cache_dir= at another folder"


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
    their shard is used; a shard is encoded again only when one of its files changes, or when it
    cannot be read (with a warning). A shard that cannot be written raises a one-line
    :class:`hat.atomic.WriteFailed` (see the module's docstring).
    """
    names = list_images(folder)
    fingerprint = model_fingerprint(retriever)
    home = cache_dir / hashlib.sha256(f"{folder.resolve()}\n{fingerprint}".encode()).hexdigest()[:16]
    _make_folder(home, cache_dir)
    planned = []
    for start in range(0, len(names), shard_size):
        chunk = names[start : start + shard_size]
        stamps = [(str(name), (folder / name).stat().st_size, (folder / name).stat().st_mtime_ns) for name in chunk]
        digest = hashlib.sha256(json.dumps([fingerprint, stamps]).encode()).hexdigest()[:24]
        planned.append((home / f"shard-{digest}.safetensors", chunk))
    contents, missing = {}, []
    for path, chunk in planned:
        if path.is_file():
            try:
                contents[path] = _shard_contents(path, chunk, retriever.num_levels)
                continue
            except DamagedShard as damage:
                log.warning("feature cache file %s cannot be read (%s): encoding its %d images again",
                            path, damage, len(chunk))
        missing.append((path, chunk))
    todo = sum(len(chunk) for _, chunk in missing)
    log.info(
        "%d images under %s: %d cached, %d to encode (cache %s)", len(names), folder, len(names) - todo, todo, home
    )
    with tqdm(total=todo, unit="img", desc="encoding images", disable=not progress or todo == 0) as bar:
        for path, chunk in missing:
            contents[path] = _encode_shard(retriever, folder, chunk, path, batch_size, num_workers, bar)
    keep = {path for path, _ in planned}
    for stale in home.glob(SHARD_PATTERN):
        if stale not in keep:
            try:
                stale.unlink()
            except OSError as error:  # a read-only cache still serves the shards it has
                log.warning("cannot delete the outdated feature cache file %s (%s)", stale,
                            error.strerror or error)
    shards = [Shard(path, *contents[path]) for path, _ in planned]
    for problem in (problem for shard in shards for problem in shard.skipped):
        log.warning("left out of the search: %s", problem)
    return shards


def _make_folder(home: Path, cache_dir: Path) -> None:
    """Create the cache folder ``home`` (in ``cache_dir``); a one-line error when it cannot be."""
    if cache_dir.exists() and not cache_dir.is_dir():
        raise ConfigError(f"cache_dir={cache_dir} is a file, not a folder: point cache_dir= at a folder")
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise write_failed(error, home, f"the feature cache folder {home}", then=ELSEWHERE) from error


def _encode_shard(retriever, folder, chunk, path, batch_size, num_workers, bar) -> tuple[list[str], list[str]]:
    """Encode ``chunk`` (relative paths) and write its shard to ``path`` atomically; returns (the
    images it holds, the problems of those left out)."""
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
    try:
        atomic_write(path, lambda handle: handle.write(payload))
    except OSError as error:
        raise write_failed(error, path, f"the feature cache file {path}", then=ELSEWHERE) from error
    return kept, skipped


class DamagedShard(Exception):
    """A cache file that cannot be used as the shard of its images; the message says why."""


def _shard_contents(path: Path, chunk: list[Path], num_levels: int) -> tuple[list[str], list[str]]:
    """(the images a shard holds, the problems of the images it left out), once its header shows a
    shard of ``chunk`` with ``num_levels`` levels; else :class:`DamagedShard`."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            shapes = {key: handle.get_slice(key).get_shape() for key in handle.keys()}
    except OSError as error:
        raise DamagedShard(f"cannot open it: {error.strerror or error}") from error
    except SafetensorError as error:
        raise DamagedShard(f"not a valid safetensors file: {error}") from error
    try:
        images, skipped = json.loads(metadata["images"]), json.loads(metadata["skipped"])
    except (KeyError, ValueError) as error:
        raise DamagedShard("its list of images is missing or damaged") from error
    names = {str(name) for name in chunk}
    if not (isinstance(images, list) and isinstance(skipped, list) and set(map(str, images)) <= names
            and len(images) + len(skipped) == len(chunk)):
        raise DamagedShard(f"it lists other images than the {len(chunk)} it stands for")
    expected = [f"level{k}" for k in range(1, num_levels + 1)] if images else []
    if sorted(shapes) != sorted(expected):
        raise DamagedShard(f"it holds {sorted(shapes) or 'no tensors'}, expected {expected or 'none'}")
    wrong = [key for key, shape in shapes.items() if not shape or shape[0] != len(images)]
    if wrong:
        raise DamagedShard(f"{wrong[0]} has shape {shapes[wrong[0]]}, not one row for each of its {len(images)} images")
    return images, skipped


def read_shards(shards: list[Shard], device: torch.device) -> Iterator[tuple[list[str], ImageFeatures]]:
    """Each non-empty shard's image names and features on ``device``, one shard at a time. A shard
    that can no longer be read (changed or removed since :func:`build_cache` checked it) raises a
    one-line :class:`ConfigError` naming it."""
    for shard in shards:
        if not shard.images:
            continue
        try:
            with safe_open(str(shard.path), framework="pt", device=str(device)) as handle:
                count = sum(1 for key in handle.keys() if key.startswith("level"))
                features = ImageFeatures([handle.get_tensor(f"level{k}") for k in range(1, count + 1)])
        except (SafetensorError, OSError) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
            raise ConfigError(f"cannot read the feature cache file {shard.path} ({reason}): it changed during "
                              f"the search; search again (a damaged file is then encoded again)") from error
        yield shard.images, features
