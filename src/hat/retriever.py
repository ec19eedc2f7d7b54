"""A trained HAT model ready to use: ``model = hat.load(PATH)``, then encode, score and explain.

```python
import hat
model = hat.load("runs/qs/checkpoints/best.pt")          # or an export folder, or a HAT release .ckpt
images = model.encode_images(["a.jpg", "b.jpg"])          # paths or PIL images
texts = model.encode_texts(["two dogs on a beach", "a red car"])
scores = model.score(images, texts)                       # scores.fused (2, 2), scores.levels[k] (2, 2)
```

Features are kept in float16, as evaluation keeps them, and scored by the same functions as
``evaluate.py``, so a split scored here gives the numbers ``evaluate.py`` prints.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from hat.alignment import PairAttention, fuse_levels, pair_attention
from hat.data.datasets import CaptionCollator
from hat.data.records import ImageRecord, load_image_file
from hat.data.transforms import eval_transform
from hat.features import encode_caption_batch, encode_image_batch, score_level
from hat.kernels.dispatch import check_kernel_choice
from hat.models.hat import HATModel
from hat.models.loading import load_model
from hat.models.weight_sources import WeightSource
from hat.runtime import PRECISIONS, Runtime, resolve_precision

ImageInput = Image.Image | str | Path


@dataclass
class ImageFeatures:
    """Encoded images: one float16 ``(N, R_k, D)`` tensor per level (regions of a square grid)."""

    levels: list[torch.Tensor]

    def __len__(self) -> int:
        return self.levels[0].shape[0]

    def __getitem__(self, rows: slice) -> ImageFeatures:
        return ImageFeatures([level[rows] for level in self.levels])


@dataclass
class TextFeatures:
    """Encoded texts: one float16 ``(M, W, D)`` tensor per level, ``(M,)`` token counts, the texts."""

    levels: list[torch.Tensor]
    lengths: torch.Tensor
    texts: list[str]

    def __len__(self) -> int:
        return self.lengths.shape[0]


@dataclass
class Scores:
    """Similarities of N images and M texts: ``levels``, one float32 ``(N, M)`` per level, and
    ``fused``, the sum of the fused levels (HAT's score)."""

    levels: list[torch.Tensor]
    fused: torch.Tensor


class Retriever:
    """A loaded model with its image transform and tokenizer, on one device and in one precision."""

    def __init__(
        self, model: HATModel, config, tokenizer, runtime: Runtime, source: WeightSource | None = None
    ) -> None:
        """``model`` as it is (its device and train/eval mode are the caller's), built from the run
        ``config``; ``source``: where its weights came from (:func:`load` sets it)."""
        self.model = model
        self.config = config
        self.source = source
        self.tokenizer = tokenizer
        self.runtime = runtime
        self.image_size = int(config.encoder.image.image_size)
        self.transform = eval_transform(self.image_size)
        self.collator = CaptionCollator(tokenizer, config.encoder.text.max_length)

    @property
    def num_levels(self) -> int:
        return self.model.num_levels

    def pixels(self, images: Sequence[ImageInput]) -> torch.Tensor:
        """Images (PIL, or paths read with the dataset's checks) -> ``(N, 3, S, S)`` normalised pixels."""
        return torch.stack([self.transform(as_rgb(image)) for image in images])

    def encode_images(self, images: Sequence[ImageInput], batch_size: int = 128) -> ImageFeatures:
        """Encode images, ``batch_size`` at a time."""
        if not images:
            raise ValueError("encode_images needs at least one image")
        batches = [
            encode_image_batch(self.model, self.pixels(images[start : start + batch_size]), self.runtime)
            for start in range(0, len(images), batch_size)
        ]
        return ImageFeatures([torch.cat(level) for level in zip(*batches)])

    def encode_texts(self, texts: Sequence[str], batch_size: int = 128) -> TextFeatures:
        """Encode texts (padded to the longest, cut at ``encoder.text.max_length`` tokens), ``batch_size`` at a time."""
        texts = list(texts)
        if not texts or not all(isinstance(text, str) and text.strip() for text in texts):
            raise ValueError("encode_texts needs a list of non-empty strings")
        tokens = self.collator.tokenize(texts)
        ids, mask = tokens["input_ids"], tokens["attention_mask"]
        batches = [
            encode_caption_batch(
                self.model, ids[start : start + batch_size], mask[start : start + batch_size], self.runtime
            )
            for start in range(0, len(texts), batch_size)
        ]
        lengths = mask.sum(dim=1).to(self.runtime.device)
        return TextFeatures([torch.cat(level) for level in zip(*batches)], lengths, texts)

    def score(self, images: ImageFeatures, texts: TextFeatures, levels: Sequence[int] | None = None) -> Scores:
        """Scores of every image against every text; ``levels`` (1-based) picks the levels fused
        (all for ``None``), as ``eval.levels`` does."""
        if levels is not None and not all(1 <= k <= self.num_levels for k in levels):
            raise ValueError(f"levels={list(levels)}: the model has levels 1..{self.num_levels}")
        per_level = [
            score_level(self.model, regions, words, texts.lengths, self.runtime)
            for regions, words in zip(images.levels, texts.levels)
        ]
        return Scores(per_level, fuse_levels(per_level, levels))

    def attention(self, image: ImageInput, text: str) -> list[PairAttention]:
        """Per level, the region-word attention of one image and one text (see :class:`hat.alignment.PairAttention`)."""
        image_features = self.encode_images([image])
        text_features = self.encode_texts([text])
        length = int(text_features.lengths[0])
        return [
            pair_attention(regions[0], words[0], length, self.model.direction, self.model.smooth)
            for regions, words in zip(image_features.levels, text_features.levels)
        ]

    def tokens(self, text: str) -> list[str]:
        """The tokens of ``text`` as the model reads them (with the tokenizer's special tokens)."""
        ids = self.collator.tokenize([text])["input_ids"][0]
        return self.tokenizer.convert_ids_to_tokens(ids.tolist())


def load(
    path: str | Path, device: str = "auto", precision: str = "auto", architecture=None, kernel: str = "auto"
) -> Retriever:
    """The model at ``path``: a ``.pt`` checkpoint of train.py, a folder of ``evaluate.py export=DIR``
    or a HAT release ``.ckpt`` (give its ``architecture``: a mapping with the ``encoder`` and
    ``alignment`` config, e.g. HAT's from ``conf/encoder/hat.yaml`` and ``conf/alignment/hat.yaml``).

    ``device``: ``auto`` (the GPU when there is one), ``cpu``, ``cuda`` or ``cuda:N``;
    ``precision``: ``auto`` (bf16 or fp16 on a GPU, fp32 on the CPU), ``bf16``, ``fp16`` or ``fp32``;
    ``kernel``: the similarity's path, ``auto`` (the fused Triton kernel on a GPU once it passes its
    self-check), ``torch`` or ``triton`` (see :mod:`hat.kernels.dispatch`).
    Raises :class:`hat.config.ConfigError` naming the path when it holds no model this version reads.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not one of {PRECISIONS}")
    target = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    if target.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but torch sees no CUDA GPU")
    check_kernel_choice(kernel, target, field="kernel")
    runtime = Runtime(target, resolve_precision(precision, target), num_workers=0, pin_memory=False, compile=False,
                      kernel=kernel)
    loaded = load_model(Path(path), architecture)
    return Retriever(loaded.model.to(target).eval(), loaded.config, loaded.tokenizer, runtime, loaded.source)


def as_rgb(image: ImageInput) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    return load_image_file(ImageRecord(key=str(image), captions=(), path=Path(image)))
