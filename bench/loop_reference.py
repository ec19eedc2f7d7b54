"""The reference pattern the fast paths are measured against: the equations of docs/model.md computed one caption at
a time, the caption's valid words copied once per image, every tensor of the pair materialised
(the ``(I, R, d)`` context included). Written from the equations, not from hat.alignment."""

from __future__ import annotations

import torch
import torch.nn.functional as F

LEAKY_SLOPE = 0.1
EPS = 1e-8


def _cosine(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cosine along the last axis; the product of the norms is clamped at EPS."""
    return (x * y).sum(-1) / (x.norm(dim=-1) * y.norm(dim=-1)).clamp_min(EPS)


def loop_similarity(
    images: torch.Tensor, captions: torch.Tensor, lengths: torch.Tensor, direction: str, smooth: float
) -> torch.Tensor:
    """``(I, C)`` scores of images ``(I, R, d)`` against captions ``(C, W, d)`` with ``lengths``."""
    num_images = images.shape[0]
    scores = images.new_zeros((num_images, captions.shape[0]))
    for c in range(captions.shape[0]):
        words = captions[c, : int(lengths[c])].unsqueeze(0).expand(num_images, -1, -1).contiguous()  # (I, Wc, d)
        if direction == "i2t":
            attn = F.leaky_relu(torch.bmm(images, words.transpose(1, 2)), LEAKY_SLOPE)  # (I, R, Wc)
            attn = attn / (attn.norm(dim=1, keepdim=True) + EPS)  # over regions, per word
            attn = torch.softmax(attn * smooth, dim=2)  # over words, per region
            context = torch.bmm(attn, words)  # (I, R, d)
            scores[:, c] = _cosine(images, context).mean(dim=1)
        else:
            attn = F.leaky_relu(torch.bmm(words, images.transpose(1, 2)), LEAKY_SLOPE)  # (I, Wc, R)
            attn = attn / (attn.norm(dim=1, keepdim=True) + EPS)  # over words, per region
            attn = torch.softmax(attn * smooth, dim=2)  # over regions, per word
            context = torch.bmm(attn, images)  # (I, Wc, d)
            scores[:, c] = _cosine(words, context).mean(dim=1)
    return scores
