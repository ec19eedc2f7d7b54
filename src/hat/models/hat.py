"""HAT: two-stream encoders aligned at several levels by SCAN cross attention (docs/model.md)."""

from __future__ import annotations

import torch
from torch import nn

from hat.alignment import fuse_levels, multi_level_similarity
from hat.models.image_encoder import ImageEncoder, build_image_encoder
from hat.models.spec import ModelSpec
from hat.models.text_encoder import TextEncoder, build_text_encoder


class HATModel(nn.Module):
    """Image and text encoders with one Linear projection per level and side into a shared space.

    Level ``k`` pairs text tap ``text_encoder.taps[k]`` with image tap ``image_encoder.taps[k]``.
    A pair's score is the sum of its level scores.
    """

    def __init__(
        self,
        image_encoder: ImageEncoder,
        text_encoder: TextEncoder,
        embed_dim: int,
        direction: str = "i2t",
        smooth: float = 9.0,
        block_elements: int | None = None,
    ) -> None:
        super().__init__()
        if len(image_encoder.taps) != len(text_encoder.taps):
            raise ValueError(
                f"image taps {image_encoder.taps} and text taps {text_encoder.taps} differ in length"
            )
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.image_proj = nn.ModuleList(nn.Linear(w, embed_dim) for w in image_encoder.widths)
        self.text_proj = nn.ModuleList(nn.Linear(text_encoder.width, embed_dim) for _ in text_encoder.taps)
        self.direction = direction
        self.smooth = smooth
        self.block_elements = block_elements

    @property
    def num_levels(self) -> int:
        return len(self.image_proj)

    def set_encoders_frozen(self, frozen: bool, stage_norms: bool = True) -> None:
        """Freeze or unfreeze both backbones. With ``stage_norms`` the tapped stages' new norms freeze
        and unfreeze with them, as HAT's code does; otherwise they train throughout. The
        projections always train."""
        self.image_encoder.set_backbone_trainable(not frozen)
        self.image_encoder.set_stage_norms_trainable(not (frozen and stage_norms))
        self.text_encoder.set_trainable(not frozen)

    def train_mode(self, dropout: bool = True) -> None:
        """Training mode. With ``dropout=False`` every module but the batch norms stays in eval mode,
        which turns off dropout, attention dropout and drop path while batch statistics still
        update: the same batch gives the same loss at the same weights (``debug=overfit``)."""
        self.train()
        if not dropout:
            for module in self.modules():
                module.training = isinstance(module, nn.modules.batchnorm._BatchNorm)

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute the encoders' activations during backward instead of storing them."""
        self.image_encoder.backbone.set_grad_checkpointing(enabled)
        text = self.text_encoder.model
        # transformers 5 renamed gradient_checkpointing_* to activation_checkpointing_*
        switch = "enable" if enabled else "disable"
        method = getattr(text, f"activation_checkpointing_{switch}", None) or getattr(
            text, f"gradient_checkpointing_{switch}"
        )
        method()

    def encode_images(self, images: torch.Tensor) -> list[torch.Tensor]:
        """``(B, 3, H, W)`` -> one ``(B, R_k, embed_dim)`` tensor per level."""
        return [proj(x) for proj, x in zip(self.image_proj, self.image_encoder(images))]

    def encode_captions(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``(C, W)`` ids and mask -> (one ``(C, W, embed_dim)`` tensor per level, ``(C,)`` lengths).

        Padding tokens are not zero after projection; the lengths mark where each caption ends.
        """
        hidden = self.text_encoder(input_ids, attention_mask)
        lengths = attention_mask.sum(dim=1)
        return [proj(x) for proj, x in zip(self.text_proj, hidden)], lengths

    def level_similarities(
        self, images: list[torch.Tensor], captions: list[torch.Tensor], lengths: torch.Tensor, kernel: str = "auto"
    ) -> list[torch.Tensor]:
        """One ``(I, C)`` float32 score matrix per level, from encoded images and captions; ``kernel``
        as :func:`hat.alignment.scan_similarity` takes it (``eval.kernel``)."""
        return multi_level_similarity(
            images, captions, lengths, self.direction, self.smooth, self.block_elements, kernel
        )

    def encode(
        self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """Both encoders on a batch: (image levels ``(B, R_k, D)``, caption levels ``(B, W, D)``, lengths ``(B,)``)."""
        captions, lengths = self.encode_captions(input_ids, attention_mask)
        return self.encode_images(images), captions, lengths

    def score(self, images: list[torch.Tensor], captions: list[torch.Tensor], lengths: torch.Tensor) -> torch.Tensor:
        """Fused ``(I, C)`` scores of encoded features: the sum of :meth:`level_similarities`."""
        return fuse_levels(self.level_similarities(images, captions, lengths))

    def forward(
        self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """:meth:`encode` (what DDP and torch.compile wrap). The model only encodes and scores:
        the training step gathers the features of all processes before it scores them."""
        return self.encode(images, input_ids, attention_mask)


def build_model(spec: ModelSpec) -> HATModel:
    """The model ``spec`` describes (see :func:`hat.models.spec.model_spec`)."""
    model = HATModel(
        build_image_encoder(spec.image, list(spec.image_taps), spec.pretrained),
        build_text_encoder(spec.text, list(spec.text_taps), spec.pretrained),
        embed_dim=spec.embed_dim,
        direction=spec.direction,
        smooth=spec.smooth,
        block_elements=spec.block_elements,
    )
    if model.image_encoder.depth != spec.image.depth:
        raise ValueError(
            f"encoder.image.depth={spec.image.depth} but {spec.image.name!r} has "
            f"{model.image_encoder.depth} stages/layers; set encoder.image.depth to match"
        )
    return model
