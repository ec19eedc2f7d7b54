"""Image transforms of HAT's recipe (docs/data.md), with ImageNet normalisation."""

from __future__ import annotations

from collections.abc import Sequence

from torchvision import transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EVAL_RESIZE_RATIO = 256 / 224


def train_transform(image_size: int, crop_scale: Sequence[float] = (0.08, 1.0), hflip: bool = True) -> T.Compose:
    """RandomResizedCrop(image_size, crop_scale) [+ horizontal flip] -> normalised ``(3, S, S)`` tensor."""
    steps = [T.RandomResizedCrop(image_size, scale=tuple(crop_scale))]
    if hflip:
        steps.append(T.RandomHorizontalFlip())
    return T.Compose([*steps, T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def eval_transform(image_size: int) -> T.Compose:
    """Resize(image_size * 256 / 224) + CenterCrop(image_size) -> normalised ``(3, S, S)`` tensor."""
    return T.Compose(
        [
            T.Resize(round(image_size * EVAL_RESIZE_RATIO)),
            T.CenterCrop(image_size),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
