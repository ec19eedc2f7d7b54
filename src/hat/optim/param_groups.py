"""The optimizer's parameter groups: a smaller rate for the pretrained backbones, decaying with
depth, and weight decay only where it belongs.

Every parameter of the model and the loss module is in exactly one group. A parameter of a
backbone (the timm image model, the BERT text model) at depth ``d`` of ``D`` gets the rate
``lr * backbone_lr_scale * layer_decay ** (D - d)``: the top block ``backbone_lr_scale`` times the
base rate, each block below ``layer_decay`` times the one above (the embeddings lowest). The
new parts (projections, new stage norms, a learnable temperature) get ``lr``. Parameters with the
same scale share a group, so HAT's defaults (both 1, no weight decay) make one group, as a plain
optimizer does.

With weight decay, each rate's parameters split in two by :func:`decays`: matrices (linear,
convolution and embedding weights) decay, while biases, norm weights and the loss's parameters
(the temperature) do not, the rule open_clip and timm follow.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from timm.models import group_parameters
from torch import nn

from hat.models.hat import HATModel

_BERT_LAYER = re.compile(r"(?:^|\.)layer\.(\d+)\.")


def image_backbone_depths(backbone: nn.Module) -> dict[str, int]:
    """Depth of each parameter name of a timm ``backbone`` (0: the stem; the top block is the
    largest), from the model's own fine-grained ``group_matcher``."""
    groups = group_parameters(backbone, backbone.group_matcher(coarse=False))
    return {name: depth for depth, key in enumerate(sorted(groups)) for name in groups[key]}


def text_backbone_depths(model: nn.Module) -> dict[str, int]:
    """Depth of each parameter name of a BERT ``model``: 0 the embeddings, ``i + 1`` encoder layer
    ``i``, and anything after the layers (the pooler) with the last layer."""
    layers = model.config.num_hidden_layers
    depths = {}
    for name, _ in model.named_parameters():
        match = _BERT_LAYER.search(name)
        if match:
            depths[name] = int(match.group(1)) + 1
        else:
            depths[name] = 0 if "embeddings" in name else layers
    return depths


def parameter_scales(model: HATModel, backbone_lr_scale: float, layer_decay: float) -> dict[str, float]:
    """The rate scale of every backbone parameter of ``model``, by its full name (``image_encoder.backbone...``)."""
    scales = {}
    for prefix, depths in (
        ("image_encoder.backbone.", image_backbone_depths(model.image_encoder.backbone)),
        ("text_encoder.model.", text_backbone_depths(model.text_encoder.model)),
    ):
        top = max(depths.values())
        for name, depth in depths.items():
            scales[prefix + name] = backbone_lr_scale * layer_decay ** (top - depth)
    return scales


def decays(parameter: nn.Parameter, in_loss: bool) -> bool:
    """Whether weight decay applies to ``parameter``: to weights of two or more dimensions of the
    model, never to biases and norm weights (one dimension or none) nor to the loss's own
    parameters (``in_loss``: InfoNCE's temperature)."""
    return not in_loss and parameter.ndim > 1


def parameter_groups(
    model: HATModel, loss: nn.Module, lr: float, backbone_lr_scale: float = 1.0, layer_decay: float = 1.0,
    weight_decay: float = 0.0,
) -> list[dict]:
    """Optimizer parameter groups, each ``{"params", "lr", "lr_scale", "name"}``, in order of first
    appearance of their scale (and decay) in ``model.parameters()`` then ``loss.parameters()``;
    every parameter once (frozen ones included: a frozen encoder trains later).

    Without ``weight_decay`` the groups are the rate scales, named ``all`` when there is one and
    ``lr_x{scale}`` otherwise. With it, each scale splits into the parameters that :func:`decays`
    (``weight_decay`` set to it) and the others (``weight_decay`` 0), named ``decay`` and
    ``no_decay``, prefixed with ``lr_x{scale}_`` when there are several scales."""
    scales = parameter_scales(model, backbone_lr_scale, layer_decay)
    split = weight_decay > 0
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for parameter, scale, in_loss in _with_scales(model, loss, scales):
        groups.setdefault((scale, split and decays(parameter, in_loss)), []).append(parameter)
    count = len({scale for scale, _ in groups})
    result = []
    for (scale, decay), params in groups.items():
        group = {"params": params, "lr": lr * scale, "lr_scale": scale, "name": _group_name(scale, count)}
        if split:
            group["name"] = _decay_name(group["name"] if count > 1 else "", decay)
            group["weight_decay"] = weight_decay if decay else 0.0
        result.append(group)
    return result


def _with_scales(model: HATModel, loss: nn.Module, scales: dict[str, float]) -> Iterable[tuple]:
    """``(parameter, rate scale, whether it is the loss's)`` of the model's parameters (scale 1
    unless in ``scales``), then the loss's (scale 1)."""
    for name, parameter in model.named_parameters():
        yield parameter, scales.get(name, 1.0), False
    for parameter in loss.parameters():
        yield parameter, 1.0, True


def _group_name(scale: float, count: int) -> str:
    return "all" if count == 1 else f"lr_x{scale:.4g}"


def _decay_name(rate: str, decay: bool) -> str:
    kind = "decay" if decay else "no_decay"
    return f"{rate}_{kind}" if rate else kind
