"""The W&B objects a validation logs: the recall@K line chart and the two example tables.

Each function takes the ``wandb`` module (imported by the caller, only when a run is live) and
returns the object to log.
"""

from __future__ import annotations

from hat.retrieval_examples import RetrievalExamples

MARKS = {True: "✓ ", False: "✗ "}  # a result that belongs to its query, or not


def recall_chart(wandb, i2t: list[float], t2i: list[float], prefix: str):
    """Recall@K both ways (percent, K = 1 .. len) as a W&B line chart."""
    return wandb.plot.line_series(xs=list(range(1, len(i2t) + 1)), ys=[i2t, t2i], keys=["i2t", "t2i"],
                                  title=f"{prefix} recall@K", xname="K")


def image_query_table(wandb, examples: RetrievalExamples, size: int):
    """Image queries: the image's thumbnail, index and first correct rank, then its top captions."""
    top_k = len(examples.image_queries[0].top_captions) if examples.image_queries else 0
    table = wandb.Table(columns=["image", "index", "first_correct_rank", *(f"top{k}" for k in range(1, top_k + 1))])
    for query in examples.image_queries:
        table.add_data(
            wandb.Image(examples.thumbnail(query.image, size)),
            query.image,
            query.first_correct_rank,
            *(MARKS[ok] + text for ok, text in zip(query.top_correct, query.top_captions)),
        )
    return table


def caption_query_table(wandb, examples: RetrievalExamples, size: int):
    """Caption queries: the caption, its image's thumbnail, the first correct rank, then thumbnails
    of the images it retrieved first."""
    top_k = len(examples.caption_queries[0].top_images) if examples.caption_queries else 0
    table = wandb.Table(columns=["caption", "image", "first_correct_rank", *(f"top{k}" for k in range(1, top_k + 1))])
    for query in examples.caption_queries:
        table.add_data(
            query.caption,
            wandb.Image(examples.thumbnail(query.image, size)),
            query.first_correct_rank,
            *(
                wandb.Image(examples.thumbnail(image, size), caption=MARKS[ok] + f"image {image}")
                for ok, image in zip(query.top_correct, query.top_images)
            ),
        )
    return table
