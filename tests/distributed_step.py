"""One training step and one evaluation, run alone or by ``torchrun``; rank 0 saves what it saw.

Used by tests/test_distributed.py: ``python tests/distributed_step.py OUT`` (one process, global
batch 8) and ``torchrun --nproc_per_node=2 tests/distributed_step.py OUT [CHUNKS]`` (two processes
of 4, each in CHUNKS GradCache chunks) must save the same loss, gradients and validation metrics.
"""

import sys
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, str(Path(__file__).parent))
from conftest import TINY_RUN, compose_config  # noqa: E402
from hat.data.build import build_splits  # noqa: E402
from hat.data.datasets import CaptionCollator, PairDataset  # noqa: E402
from hat.data.spec import data_spec
from hat.data.transforms import eval_transform  # noqa: E402
from hat.engine import distributed  # noqa: E402
from hat.engine.evaluation import protocol_tables, score_split  # noqa: E402
from hat.engine.step import training_step  # noqa: E402
from hat.losses import build_loss, loss_spec  # noqa: E402
from hat.models.hat import build_model  # noqa: E402
from hat.models.spec import model_spec  # noqa: E402
from hat.models.text_encoder import build_tokenizer  # noqa: E402
from hat.runtime import resolve_runtime  # noqa: E402

GLOBAL_BATCH = 8


def main(out: Path, chunks: int) -> None:
    # timm's own window attention: PyTorch's fused CPU attention rounds differently for batches of
    # 4 and 8 (gradients 1.2e-5 apart, relative), which is not what this comparison is about.
    cfg = compose_config("train", [*TINY_RUN, "encoder.image.fused_attention=false"])
    ranks = distributed.from_environment()
    runtime = resolve_runtime(cfg.hardware)
    distributed.init_process_group(ranks, runtime.device.type)
    torch.manual_seed(0)
    model = build_model(model_spec(cfg))
    model.eval()  # no dropout: both runs must compute the same function
    loss_fn = build_loss(loss_spec(cfg.loss))
    splits = build_splits(data_spec(cfg.dataset), cfg.seed)
    text = model_spec(cfg).text
    collator = CaptionCollator(build_tokenizer(text), text.max_length, pad_to_max_length=True)
    pairs = PairDataset(splits["train"], eval_transform(cfg.encoder.image.image_size), cfg.seed)
    local = GLOBAL_BATCH // ranks.world_size
    batch = collator([pairs[i] for i in range(ranks.rank * local, (ranks.rank + 1) * local)])

    wrapped = DistributedDataParallel(model) if ranks.enabled else model
    loss = training_step(model, wrapped, loss_fn, batch, runtime, runtime.grad_scaler(), chunks)
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    sims = score_split(model, splits["val"], collator, cfg.encoder.image.image_size, runtime, 4, ranks)
    metrics = protocol_tables(sims, "val", splits["val"].captions_per_image, None)
    if ranks.is_main:
        torch.save({"loss": loss.detach(), "grads": grads, "metrics": metrics}, out)
    distributed.shutdown_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 1)
