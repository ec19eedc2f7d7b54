"""Read the ``state_dict`` of a PyTorch Lightning checkpoint without Lightning and without running its pickle.

A Lightning ``.ckpt`` is a ``torch.save`` zip file whose pickle also holds the training config
and callback states keyed by Lightning classes. ``torch.load(weights_only=True)`` refuses such a
file, and a plain unpickle needs Lightning installed and would run whatever callables the pickle
names. :func:`read_lightning_state_dict` instead unpickles with a restricted unpickler that
executes nothing: ``OrderedDict`` is rebuilt, the tensor-rebuilding functions of torch's format
are replaced by inert record builders, every other class or function named by the pickle becomes an
inert placeholder, and tensors are materialised afterwards from the zip's storage records, only
for the ``state_dict`` (so optimizer states are never read).
"""

from __future__ import annotations

import collections
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

# Storage classes named in torch's persistent ids, and the element type of their records.
STORAGE_DTYPES = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128,
    "UntypedStorage": torch.uint8,
}


@dataclass(frozen=True)
class StorageType:
    """What ``torch.FloatStorage`` and friends unpickle to: only their element type."""

    dtype: torch.dtype


@dataclass(frozen=True)
class StorageRef:
    """A storage record of the zip file: ``data/<key>``, ``numel`` elements of ``dtype``."""

    key: str
    dtype: torch.dtype
    numel: int


@dataclass(frozen=True)
class TensorRef:
    """A strided view into a storage record, as ``torch._utils._rebuild_tensor_v2`` would build it."""

    storage: StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def tensor_ref(storage, offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None) -> TensorRef:
    """Stands in for ``torch._utils._rebuild_tensor_v2``: records where the tensor's data lies."""
    if not isinstance(storage, StorageRef):
        raise pickle.UnpicklingError(f"a tensor refers to {type(storage).__name__}, expected a storage record")
    return TensorRef(storage, int(offset), tuple(size), tuple(stride))


def parameter_ref(data, requires_grad=False, backward_hooks=None, state=None):
    """Stands in for ``torch._utils._rebuild_parameter``: a parameter is kept as its data."""
    return data


class Placeholder:
    """An instance of a class the unpickler does not allow: accepts any arguments and state, does nothing."""

    def __new__(cls, *args, **kwargs):
        return super().__new__(cls)

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __setstate__(self, state) -> None:
        pass

    def __setitem__(self, key, value) -> None:
        pass

    def append(self, item) -> None:
        pass

    def extend(self, items) -> None:
        pass


def typed_ref(rebuild, tensor_type, args, state):
    """Stands in for ``torch._tensor._rebuild_from_type_v2`` (tensors with Python attributes): keeps the data only."""
    return rebuild(*args)


ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._tensor", "_rebuild_from_type_v2"): typed_ref,
    ("torch._utils", "_rebuild_tensor_v2"): tensor_ref,
    ("torch._utils", "_rebuild_parameter"): parameter_ref,
    ("torch._utils", "_rebuild_parameter_with_state"): parameter_ref,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles torch's ``data.pkl`` into plain containers, :class:`TensorRef` records and placeholders.

    Nothing the pickle names is imported or called, except ``OrderedDict`` and the record builders
    above; any other ``module.name`` becomes a :class:`Placeholder` subclass of that name (one class
    per name, so objects keyed by different classes stay distinct).
    """

    def __init__(self, file) -> None:
        super().__init__(file)
        self.placeholders: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str):
        if (module, name) in ALLOWED:
            return ALLOWED[module, name]
        if module == "torch" and name in STORAGE_DTYPES:
            return StorageType(STORAGE_DTYPES[name])
        key = (module, name)
        if key not in self.placeholders:
            self.placeholders[key] = type(name, (Placeholder,), {"__module__": module, "__qualname__": name})
        return self.placeholders[key]

    def persistent_load(self, saved_id) -> StorageRef:
        """torch's persistent id of a storage: ``('storage', storage type, key, location, numel)``."""
        if not (isinstance(saved_id, tuple) and len(saved_id) == 5 and saved_id[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {saved_id!r}, expected a torch storage")
        _, storage_type, key, _location, numel = saved_id
        if not isinstance(storage_type, StorageType):
            raise pickle.UnpicklingError(f"storage {key!r} has an unsupported type {storage_type!r}")
        return StorageRef(str(key), storage_type.dtype, int(numel))


def read_lightning_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of the Lightning checkpoint at ``path``: parameter and buffer name -> CPU tensor.

    ``path`` must be a zip-format ``torch.save`` file (torch >= 1.6) holding a dict with a
    ``state_dict`` entry whose values are all tensors. Nothing in the file is executed; the rest
    of the checkpoint is discarded. Errors name the file and what was expected.
    """
    path = Path(path)
    with zipfile.ZipFile(_zip_checkpoint(path)) as archive:
        prefix, checkpoint = _unpickle(archive, path)
        state = checkpoint["state_dict"]
        storages: dict[str, torch.Tensor] = {}
        tensors = {}
        for key, ref in state.items():
            try:
                tensors[key] = _materialise(ref, archive, prefix, storages)
            except (KeyError, ValueError, RuntimeError) as error:
                raise ValueError(f"{path}: cannot read tensor {key!r}: {error}") from error
        return tensors


def read_lightning_epoch(path: Path) -> int | None:
    """The ``epoch`` the Lightning checkpoint at ``path`` records: the 0-based index of the epoch it
    was saved in (HAT's Flickr30K release: 68), or None when it records none. Reads only the
    checkpoint's pickle, executing nothing; errors as :func:`read_lightning_state_dict`'s."""
    path = Path(path)
    with zipfile.ZipFile(_zip_checkpoint(path)) as archive:
        _, checkpoint = _unpickle(archive, path)
    epoch = checkpoint.get("epoch")
    return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 0 else None


def _zip_checkpoint(path: Path) -> Path:
    """``path``, checked to be a zip-format torch checkpoint."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path} is not a zip-format torch checkpoint (written by torch >= 1.6): it is truncated, or an "
            f"older format that can only be read by running its pickle, which hat does not do"
        )
    return path


def _unpickle(archive: zipfile.ZipFile, path: Path) -> tuple[str, dict]:
    """``(record prefix, checkpoint dict)`` of the archive, its ``state_dict`` checked to hold only tensors."""
    prefix = _record_prefix(archive, path)
    try:
        with archive.open(prefix + "data.pkl") as data:
            checkpoint = RestrictedUnpickler(data).load()
    except Exception as error:
        raise ValueError(f"cannot unpickle {path}: {type(error).__name__}: {error}") from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        found = sorted(map(str, checkpoint)) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(
            f"{path} is not a Lightning checkpoint: expected a dict with a 'state_dict' entry, found {found}"
        )
    state = checkpoint["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: 'state_dict' is a {type(state).__name__}, expected a dict of tensors")
    not_tensors = [key for key, value in state.items() if not isinstance(value, TensorRef)]
    if not_tensors:
        raise ValueError(f"{path}: 'state_dict' entries that are not tensors: {not_tensors}")
    return prefix, checkpoint


def _record_prefix(archive: zipfile.ZipFile, path: Path) -> str:
    """The folder that torch's records lie in (``archive/``, or the saved file's stem in older torch)."""
    pickles = [name for name in archive.namelist() if name.endswith("/data.pkl") and name.count("/") == 1]
    if len(pickles) != 1:
        raise ValueError(f"{path} is a zip file but not a torch checkpoint: expected one '<folder>/data.pkl'")
    prefix = pickles[0][: -len("data.pkl")]
    if prefix + "byteorder" in archive.namelist() and archive.read(prefix + "byteorder") != b"little":
        raise ValueError(f"{path} stores big-endian tensors; only little-endian checkpoints are supported")
    return prefix


def _materialise(ref: TensorRef, archive: zipfile.ZipFile, prefix: str, storages: dict) -> torch.Tensor:
    """The tensor that ``ref`` describes, reading each storage record once (views share it)."""
    storage = ref.storage
    if storage.key not in storages:
        name = f"{prefix}data/{storage.key}"
        raw = bytearray(archive.read(name))  # KeyError when the record is missing
        expected = storage.numel * storage.dtype.itemsize
        if len(raw) != expected:
            raise ValueError(f"storage record {name} has {len(raw)} bytes, expected {expected}")
        empty = torch.empty(0, dtype=storage.dtype)
        storages[storage.key] = torch.frombuffer(raw, dtype=storage.dtype) if raw else empty
    return storages[storage.key].as_strided(ref.size, ref.stride, ref.offset)
