"""Image encoder: a timm backbone returning token maps of the tapped stages (Swin) or layers (ViT)."""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn

from hat.checks import ConfigError
from hat.models.hub import hub_offline_reason
from hat.models.spec import ImageEncoderSpec
from hat.models.weights import load_state_dict_file


class ImageEncoder(nn.Module):
    """Tapped token maps of a timm backbone, each through its own LayerNorm (docs/model.md).

    A tap at the backbone's last stage/layer goes through the backbone's own final norm
    (pretrained) when it has one (Swin, ViT). Every other stage/layer ``s`` has a new LayerNorm
    ``stage_norms[str(s)]`` (HAT's ``norm_{s-1}``), whether tapped or not, so that HAT's released
    checkpoints load whole; the norms of untapped stages are never used and never train.

    Args:
        backbone: a timm model with ``forward_intermediates`` and ``feature_info`` (and ``norm``
            when ``own_final_norm``).
        taps: 1-based stages (Swin, CNN) or layers (ViT) to return, ascending.
        own_final_norm: use ``backbone.norm`` for the last stage; otherwise it gets a new norm
            too (CNNs, whose last stage has no LayerNorm).
    """

    def __init__(self, backbone: nn.Module, taps: list[int], own_final_norm: bool = True) -> None:
        super().__init__()
        self.backbone = backbone
        self.taps = list(taps)
        self.depth = len(backbone.feature_info)
        self.widths = [backbone.feature_info[t - 1]["num_chs"] for t in self.taps]
        self.own_final_norm = own_final_norm
        new_norm_stages = range(1, self.depth if own_final_norm else self.depth + 1)
        self.stage_norms = nn.ModuleDict(
            {str(s): nn.LayerNorm(backbone.feature_info[s - 1]["num_chs"]) for s in new_norm_stages}
        )
        self.set_stage_norms_trainable(True)

    def set_backbone_trainable(self, trainable: bool) -> None:
        """Freeze or unfreeze the backbone (its final norm included); the stage norms are not affected."""
        self.backbone.requires_grad_(trainable)

    def set_stage_norms_trainable(self, trainable: bool) -> None:
        """Freeze or unfreeze the tapped stages' new norms; the untapped stages' never train."""
        for stage, norm in self.stage_norms.items():
            norm.requires_grad_(trainable and int(stage) in self.taps)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """``(B, 3, H, W)`` images -> one ``(B, R_k, C_k)`` token map per tap."""
        maps = self.backbone.forward_intermediates(
            images, indices=[t - 1 for t in self.taps], norm=False, stop_early=True, intermediates_only=True
        )
        tokens = []
        for tap, fmap in zip(self.taps, maps):
            if fmap.dim() == 4:  # (B, C, H, W) -> (B, H * W, C)
                fmap = fmap.flatten(2).transpose(1, 2)
            own = tap == self.depth and self.own_final_norm
            norm = self.backbone.norm if own else self.stage_norms[str(tap)]
            tokens.append(norm(fmap))
        return tokens


def build_image_encoder(spec: ImageEncoderSpec, taps: list[int], pretrained: bool) -> ImageEncoder:
    """Build from ``encoder.image`` config: ``family``, ``name`` (timm), ``weights``, ``kwargs``,
    ``fused_attention`` (scaled-dot-product attention in every block; default true).

    With ``pretrained``, weights come from ``spec.weights`` (a local state dict file) when set,
    else from timm's hub (only its local cache when the hub is offline, see
    :func:`hat.models.hub.hub_offline_reason`); without it, the backbone is random and nothing is
    downloaded.
    """
    kwargs = dict(spec.kwargs)
    if pretrained and not spec.weights:
        backbone = _backbone_from_hub(spec.name, kwargs)
    else:
        backbone = timm.create_model(spec.name, pretrained=False, num_classes=0, **kwargs)
    if pretrained and spec.weights:
        state = load_state_dict_file(Path(spec.weights), "encoder.image.weights")
        try:
            missing, _ = backbone.load_state_dict(state, strict=False)
        except RuntimeError as error:  # shape mismatches
            details = "; ".join(line.strip() for line in str(error).splitlines()[1:4])
            raise ConfigError(f"encoder.image.weights={spec.weights} does not fit {spec.name!r}: {details}") from error
        missing = [k for k in missing if not k.endswith(("attn_mask", "relative_position_index"))]
        if missing:
            raise ConfigError(
                f"encoder.image.weights={spec.weights} does not fit {spec.name!r}: "
                f"missing {len(missing)} keys, e.g. {missing[:3]}"
            )
    set_fused_attention(backbone, spec.fused_attention)
    return ImageEncoder(backbone, taps, own_final_norm=spec.family != "cnn")


def set_fused_attention(backbone: nn.Module, enabled: bool) -> int:
    """Switch every timm attention block of ``backbone`` to PyTorch's scaled-dot-product attention
    (or back). timm leaves it off for Swin's window attention (relative position bias and shift
    mask go in as the attention mask); the result is the same up to rounding. Returns the number
    of blocks switched."""
    blocks = [module for module in backbone.modules() if hasattr(module, "fused_attn")]
    for module in blocks:
        module.fused_attn = enabled
    return len(blocks)


def _backbone_from_hub(name: str, kwargs: dict) -> nn.Module:
    """A pretrained timm backbone from the hub, or from the local cache alone when the hub is offline."""
    how_to = (
        "download the weights on a machine with network and pass encoder.image.weights=PATH "
        "(a .safetensors or .pth state dict), or train from random weights with encoder.pretrained=false"
    )
    offline = hub_offline_reason()
    if offline is None:
        try:
            return timm.create_model(name, pretrained=True, num_classes=0, **kwargs)
        except Exception as error:  # timm raises many kinds when weights cannot be fetched
            raise ConfigError(
                f"could not load pretrained weights for encoder.image.name={name!r} "
                f"({type(error).__name__}: {error}); {how_to}"
            ) from error
    repo = timm.models.get_pretrained_cfg(name).hf_hub_id
    cached = _cached_file(repo, ("model.safetensors", "pytorch_model.bin")) if repo else None
    if cached is None:
        raise ConfigError(
            f"no pretrained weights for encoder.image.name={name!r}: the hub is offline ({offline}) and "
            f"the local Hugging Face cache has no copy of {repo or name!r}; {how_to}"
        )
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": cached}, num_classes=0, **kwargs)


def _cached_file(repo: str, filenames: tuple[str, ...]) -> str | None:
    """The first of ``filenames`` present in the local Hugging Face cache of ``repo``."""
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        path = try_to_load_from_cache(repo_id=repo, filename=filename)
        if isinstance(path, str):
            return path
    return None
