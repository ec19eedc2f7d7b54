"""Image encoder: a timm backbone returning token maps of the tapped stages (Swin) or layers (ViT)."""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn

from hat.config import to_plain
from hat.models.weights import load_state_dict_file


class ImageEncoder(nn.Module):
    """Tapped token maps of a timm backbone, each through its own LayerNorm (DESIGN.md §2).

    A tap at the backbone's last stage/layer goes through the backbone's own final norm
    (pretrained). Every other stage/layer ``s`` has a new LayerNorm ``stage_norms[str(s)]``
    (HAT's ``norm_{s-1}``), whether tapped or not, so that HAT's released checkpoints load whole;
    the norms of untapped stages are never used and never train.

    Args:
        backbone: a timm model with ``forward_intermediates``, ``feature_info`` and ``norm``.
        taps: 1-based stages (Swin) or layers (ViT) to return, ascending.
    """

    def __init__(self, backbone: nn.Module, taps: list[int]) -> None:
        super().__init__()
        self.backbone = backbone
        self.taps = list(taps)
        self.depth = len(backbone.feature_info)
        self.widths = [backbone.feature_info[t - 1]["num_chs"] for t in self.taps]
        self.stage_norms = nn.ModuleDict(
            {str(s): nn.LayerNorm(backbone.feature_info[s - 1]["num_chs"]) for s in range(1, self.depth)}
        )
        for stage, norm in self.stage_norms.items():
            norm.requires_grad_(int(stage) in self.taps)

    def set_backbone_trainable(self, trainable: bool) -> None:
        """Freeze or unfreeze the backbone (its final norm included); the stage norms are not affected."""
        self.backbone.requires_grad_(trainable)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """``(B, 3, H, W)`` images -> one ``(B, R_k, C_k)`` token map per tap."""
        maps = self.backbone.forward_intermediates(
            images, indices=[t - 1 for t in self.taps], norm=False, stop_early=True, intermediates_only=True
        )
        tokens = []
        for tap, fmap in zip(self.taps, maps):
            if fmap.dim() == 4:  # (B, C, H, W) -> (B, H * W, C)
                fmap = fmap.flatten(2).transpose(1, 2)
            norm = self.backbone.norm if tap == self.depth else self.stage_norms[str(tap)]
            tokens.append(norm(fmap))
        return tokens


def build_image_encoder(cfg, taps: list[int], pretrained: bool) -> ImageEncoder:
    """Build from ``encoder.image`` config: ``family``, ``name`` (timm), ``weights``, ``kwargs``.

    With ``pretrained``, weights come from ``cfg.weights`` (a local state dict file) when set,
    else from timm's hub; without it, the backbone is random and nothing is downloaded.
    """
    kwargs = to_plain(cfg.get("kwargs")) or {}
    from_hub = pretrained and not cfg.get("weights")
    try:
        backbone = timm.create_model(cfg.name, pretrained=from_hub, num_classes=0, **kwargs)
    except Exception as error:  # timm raises many kinds when weights cannot be fetched
        if not from_hub:
            raise
        raise RuntimeError(
            f"could not load pretrained weights for encoder.image.name={cfg.name!r} from the hub "
            f"({type(error).__name__}: {error}). Without network, download the weights elsewhere and "
            f"pass encoder.image.weights=PATH (a .safetensors or .pth state dict), or train from "
            f"scratch with encoder.pretrained=false"
        ) from error
    if pretrained and cfg.get("weights"):
        state = load_state_dict_file(Path(cfg.weights), "encoder.image.weights")
        missing, unexpected = backbone.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith(("attn_mask", "relative_position_index"))]
        if missing:
            raise RuntimeError(
                f"encoder.image.weights={cfg.weights} does not fit {cfg.name!r}: "
                f"missing {len(missing)} keys, e.g. {missing[:3]}"
            )
    return ImageEncoder(backbone, taps)
