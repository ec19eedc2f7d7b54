"""What a ``dataset`` config resolves to, once: the checked settings and the layout found on disk.

:func:`data_spec` checks every ``dataset.*`` setting it reads and, for a dataset on disk, finds
the layout under ``dataset.root`` (``dataset.layout=auto``: the first complete one); the splits
are then built from the :class:`DataSpec` (:func:`hat.data.build.build_splits`) without looking
at the config again. Settings an older run config may lack get their defaults here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hat.checks import to_plain
from hat.data import karpathy, vsepp
from hat.data.records import SPLIT_NAMES
from hat.data.text import BAD_TEXT_MODES

DATASETS = ("shapes", "f30k", "coco")
LAYOUTS = {"f30k": ("karpathy",), "coco": ("karpathy", "vsepp")}  # dataset.layout=auto takes the first found
EXTRA_CAPTIONS = ("error", "truncate")


@dataclass(frozen=True)
class GeneratedSizes:
    """``dataset=shapes``: images generated for each split, and the pixels they are drawn at."""

    num_train: int
    num_val: int
    num_test: int
    render_size: int


@dataclass(frozen=True)
class DataSpec:
    """A resolved ``dataset``: its ``name``; for data on disk the ``root`` and the ``layout`` found
    there (``karpathy`` or ``vsepp``), for ``shapes`` the ``generated`` sizes; the captions kept per
    image and what to do with more (``extra_captions``), ``use_restval``, ``on_bad_text``,
    ``skip_bad_images``; the first ``val_images``/``test_images`` kept (None: all); the
    ``test_protocols`` (``{name: folds}``, None: one over the whole split); the training crops'
    area range ``train_crop_scale`` and ``train_hflip``."""

    name: str
    root: Path | None
    layout: str | None
    generated: GeneratedSizes | None
    captions_per_image: int
    extra_captions: str
    use_restval: bool
    on_bad_text: str
    skip_bad_images: bool
    val_images: int | None
    test_images: int | None
    test_protocols: dict[str, int] | None
    train_crop_scale: tuple[float, float]
    train_hflip: bool


# The settings a dataset option may leave out (shapes has no files to read), with their defaults.
OPTIONAL_SETTINGS = {
    "layout": "auto", "extra_captions": "error", "use_restval": False, "on_bad_text": "error",
    "skip_bad_images": False, "val_images": None, "test_images": None, "test_protocols": None,
    "train_crop_scale": [0.08, 1.0], "train_hflip": True,
}


def data_spec(cfg) -> DataSpec:
    """Check the ``dataset`` config ``cfg`` and resolve it, before any work.

    Raises ``ValueError`` naming every bad setting (the generated sizes of ``shapes`` among them),
    and ``FileNotFoundError`` naming the root, the layouts looked for and the files missing from
    each when the data is not on disk.
    """
    if cfg.name not in DATASETS:
        raise ValueError(f"dataset.name must be one of {DATASETS}, got {cfg.name!r}")
    options = {key: to_plain(cfg.get(key, default)) for key, default in OPTIONAL_SETTINGS.items()}
    generated = layout = root = None
    if cfg.name == "shapes":
        _check_shapes_sizes(cfg)
        generated = GeneratedSizes(cfg.num_train, cfg.num_val, cfg.num_test, cfg.render_size)
    else:
        _check_settings(cfg.name, cfg.captions_per_image, options)
        root = Path(str(cfg.root)).expanduser()
        layout = resolve_layout(cfg.name, root, options["layout"], options["use_restval"])
    return DataSpec(
        name=cfg.name, root=root, layout=layout, generated=generated, captions_per_image=cfg.captions_per_image,
        extra_captions=options["extra_captions"], use_restval=options["use_restval"],
        on_bad_text=options["on_bad_text"], skip_bad_images=options["skip_bad_images"],
        val_images=options["val_images"], test_images=options["test_images"],
        test_protocols=options["test_protocols"] or None, train_crop_scale=tuple(options["train_crop_scale"]),
        train_hflip=options["train_hflip"],
    )


def _check_settings(name: str, captions_per_image, options: dict) -> None:
    """Raise ``ValueError`` naming each setting of a dataset on disk that cannot work, with what is allowed."""
    problems = []
    layouts = ("auto", *LAYOUTS[name])
    if options["layout"] not in layouts:
        problems.append(f"dataset.layout={options['layout']!r} is not one of {layouts} for dataset={name}")
    if options["on_bad_text"] not in BAD_TEXT_MODES:
        problems.append(f"dataset.on_bad_text={options['on_bad_text']!r} is not one of {BAD_TEXT_MODES}")
    if not isinstance(options["skip_bad_images"], bool):
        problems.append(f"dataset.skip_bad_images={options['skip_bad_images']!r} must be true or false")
    if options["extra_captions"] not in EXTRA_CAPTIONS:
        problems.append(f"dataset.extra_captions={options['extra_captions']!r} is not one of {EXTRA_CAPTIONS}")
    if not _is_count(captions_per_image):
        problems.append(f"dataset.captions_per_image={captions_per_image!r} must be an integer >= 1")
    if problems:
        raise ValueError("; ".join(problems))


def resolve_layout(name: str, root: Path, wanted: str, use_restval: bool) -> str:
    """The layout ``root`` is read in: ``wanted`` (``dataset.layout``), or for ``auto`` the first
    complete one of dataset ``name``.

    A layout is complete when all its annotation files are there. Raises ``FileNotFoundError``
    naming the root, each layout looked for and the files it lacks.
    """
    candidates = LAYOUTS[name] if wanted == "auto" else (wanted,)
    expected = " or ".join(_describe(name, layout) for layout in candidates)
    if not root.is_dir():
        raise FileNotFoundError(
            f"dataset.root={root} does not exist (dataset={name}). Expected layout: {expected}. "
            f"Download the dataset and pass {_root_hint(name)}"
        )
    missing = {layout: [file for file in _required_files(name, layout, use_restval) if not (root / file).is_file()]
               for layout in candidates}
    for layout in candidates:
        if not missing[layout]:
            return layout
    if len(candidates) == 1:
        raise FileNotFoundError(
            f"dataset.root={root} has no {', '.join(missing[candidates[0]])} (dataset={name}, "
            f"dataset.layout={wanted}). Expected layout: {expected}"
        )
    looked_for = "".join(
        f"\n  {layout}: {_describe(name, layout)}; missing {', '.join(missing[layout])}" for layout in candidates
    )
    raise FileNotFoundError(
        f"dataset.root={root} holds neither {name} layout (dataset.layout=auto). Looked for:{looked_for}\n"
        f"Pass {_root_hint(name)} (and dataset.layout={'|'.join(candidates)} to require one layout)"
    )


def _root_hint(name: str) -> str:
    """The overrides that give dataset ``name`` another root, for train.py and evaluate.py alike:
    evaluate.py has no ``dataset`` unless one is named (a checkpoint's own is read from it)."""
    return f"dataset={name} dataset.root=PATH"


def _describe(name: str, layout: str) -> str:
    if layout == "karpathy":
        return f"Karpathy JSON, {karpathy.EXPECTED_LAYOUT[name]}"
    return f"VSE++/SCAN, {vsepp.EXPECTED_LAYOUT}"


def _required_files(name: str, layout: str, use_restval: bool) -> list[str]:
    """The annotation files ``layout`` needs, relative to the root."""
    if layout == "karpathy":
        return [karpathy.ANNOTATION_FILES[name]]
    return vsepp.required_files(use_restval)


def _check_shapes_sizes(cfg) -> None:
    """Raise ``ValueError`` naming each of ``dataset.num_train``/``num_val``/``num_test`` that is not an
    integer >= 1."""
    problems = [
        f"dataset.num_{split}={cfg[f'num_{split}']!r} must be an integer >= 1 (images generated for the {split} split)"
        for split in SPLIT_NAMES
        if not _is_count(cfg[f"num_{split}"])
    ]
    if problems:
        raise ValueError("; ".join(problems))


def _is_count(value) -> bool:
    """An integer >= 1 (not a bool: ``True`` is an ``int`` in Python but no count)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
