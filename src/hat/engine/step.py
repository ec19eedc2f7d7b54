"""One training step's forward and backward: plain, or GradCache for large effective batches.

With ``chunks`` > 1 the batch is encoded chunk by chunk without a graph, the loss over the whole
batch (hardest negatives included) is differentiated with respect to the cached features, and
each chunk is encoded again with its graph to push those feature gradients into the weights
(Gao et al., "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup", 2021).
Loss and gradients equal those of the plain step on the whole batch; memory is that of a chunk.
Plain gradient accumulation would change the loss (negatives only within a chunk), so it is not
offered.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from hat.data.device_decode import images_on
from hat.engine.checkpoint import capture_rng_state, restore_rng_state
from hat.engine.distributed import gather_with_grad
from hat.models.hat import HATModel
from hat.runtime import Runtime


def wrap_for_training(model: HATModel, ranks, runtime: Runtime) -> nn.Module:
    """The model as the step calls it: DDP across processes (which syncs exactly the parameters that
    require grad now, so it is wrapped again when the freeze schedule changes them), compiled on GPUs."""
    wrapped = model
    if ranks.enabled:
        device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        wrapped = DistributedDataParallel(model, device_ids=device_ids)
    return runtime.compiled(wrapped)


def global_scores(
    model: HATModel, images: list[torch.Tensor], captions: list[torch.Tensor], lengths: torch.Tensor
) -> torch.Tensor:
    """Fused scores of the global batch: this process's features gathered from every process (with
    their gradient, see :func:`hat.engine.distributed.gather_with_grad`), so the loss sees every
    process's negatives; ``(N * B, N * B)`` for N processes of B pairs (``(B, B)`` alone)."""
    return model.score(
        [gather_with_grad(x) for x in images], [gather_with_grad(x) for x in captions], gather_with_grad(lengths)
    )


def training_step(
    model: HATModel,
    wrapped: nn.Module,
    loss_fn: nn.Module,
    batch: dict[str, torch.Tensor],
    runtime: Runtime,
    scaler: torch.amp.GradScaler,
    chunks: int = 1,
) -> torch.Tensor:
    """Forward and backward of ``loss_fn`` on the global batch's scores (:func:`global_scores`);
    returns the (unscaled) loss.

    ``wrapped`` is what runs the encoders (the model, or its DDP/compiled wrapper); ``model`` is
    the bare :class:`HATModel`, which scores. Gradients land in the parameters, scaled by ``scaler``.
    """
    ids, mask = (batch[key].to(runtime.device, non_blocking=True) for key in ("input_ids", "attention_mask"))
    images = images_on(batch["images"], runtime.device)
    if chunks == 1:
        with runtime.autocast():
            loss = loss_fn(global_scores(model, *wrapped(images, ids, mask)))
        scaler.scale(loss).backward()
        return loss.detach()

    pieces = list(zip(images.chunk(chunks), ids.chunk(chunks), mask.chunk(chunks)))
    rng_states, cached = [], []
    with torch.no_grad():
        for piece in pieces:
            rng_states.append(capture_rng_state())
            with runtime.autocast():
                cached.append(wrapped(*piece))
    levels = len(cached[0][0])
    image_feats = [torch.cat([c[0][k] for c in cached]).detach().requires_grad_() for k in range(levels)]
    caption_feats = [torch.cat([c[1][k] for c in cached]).detach().requires_grad_() for k in range(levels)]
    lengths = torch.cat([c[2] for c in cached])
    with runtime.autocast():
        loss = loss_fn(global_scores(model, image_feats, caption_feats, lengths))
    scaler.scale(loss).backward()

    sizes = [piece[0].shape[0] for piece in pieces]
    image_grads = [g.grad.split(sizes) for g in image_feats]
    caption_grads = [g.grad.split(sizes) for g in caption_feats]
    after_first_pass = capture_rng_state()
    for index, (piece, state) in enumerate(zip(pieces, rng_states)):
        restore_rng_state(state)  # the same dropout as in the cached pass
        last = index == len(pieces) - 1
        sync = contextlib.nullcontext() if last or not hasattr(wrapped, "no_sync") else wrapped.no_sync()
        with sync:
            with runtime.autocast():
                image_levels, caption_levels, _ = wrapped(*piece)
            torch.autograd.backward(
                [*image_levels, *caption_levels],
                [*(g[index] for g in image_grads), *(g[index] for g in caption_grads)],
            )
    restore_rng_state(after_first_pass)
    return loss.detach()
