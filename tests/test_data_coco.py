"""MSCOCO in both layouts: the VSE++/SCAN annotation files, layout detection, and training on each."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import compose_config, make_karpathy_dataset, make_vsepp_coco_dataset
from hat.config import ConfigError, validate_train_config
from hat.data.build import build_splits
from hat.data.problems import DatasetError
from hat.data.spec import data_spec


def coco_config(root, *overrides):
    """The ``dataset`` config ``python train.py dataset=coco dataset.root=ROOT OVERRIDES`` reads."""
    return compose_config("train", ["dataset=coco", f"dataset.root={root}", *overrides]).dataset


def test_vsepp_layout_reads_each_split_in_id_order_with_files_from_their_folder(tmp_path):
    root = make_vsepp_coco_dataset(tmp_path, {"train": 8, "val": 5, "test": 5, "restval": 2})
    splits = build_splits(data_spec(coco_config(root)), seed=0)
    assert {name: len(split) for name, split in splits.items()} == {"train": 10, "val": 5, "test": 5}
    train, test = splits["train"], splits["test"]
    assert train.records[0].path == root / "images" / "train2014" / "COCO_train2014_000000001000.jpg"
    assert train.records[8].path == root / "images" / "val2014" / "COCO_val2014_000000001018.jpg"  # restval
    assert test.records[0].key == "COCO_val2014_000000001013.jpg"
    assert test.captions()[:2] == ["picture 13 is green, caption 0", "picture 13 is green, caption 1"]
    assert train.captions()[-1] == "picture 19 is yellow, caption 4"
    assert test.load_image(test.records[4]).size == (40, 32)


def test_vsepp_restval_joins_train_only_when_asked_and_is_not_needed_otherwise(tmp_path):
    root = make_vsepp_coco_dataset(tmp_path, {"train": 3, "val": 1, "test": 1, "restval": 2})
    assert len(build_splits(data_spec(coco_config(root)), seed=0)["train"]) == 5
    (root / "annotations" / "coco_restval_ids.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"coco_restval_ids\.npy"):
        data_spec(coco_config(root))
    assert len(build_splits(data_spec(coco_config(root, "dataset.use_restval=false")), seed=0)["train"]) == 3


def test_layout_is_detected_from_disk_or_forced(tmp_path):
    vsepp_only = make_vsepp_coco_dataset(tmp_path / "vsepp", {"train": 2, "val": 1, "test": 1, "restval": 1})
    assert data_spec(coco_config(vsepp_only)).layout == "vsepp"
    with pytest.raises(ConfigError, match=rf"dataset.root={vsepp_only} has no dataset_coco\.json .*layout=karpathy"):
        validate_train_config(compose_config("train", ["dataset=coco", f"dataset.root={vsepp_only}",
                                                       "dataset.layout=karpathy"]))
    both = make_vsepp_coco_dataset(tmp_path / "both", {"train": 2, "val": 1, "test": 1, "restval": 1})
    make_karpathy_dataset(both, "coco", {"train": 4, "val": 1, "test": 1})
    assert data_spec(coco_config(both)).layout == "karpathy"
    assert len(build_splits(data_spec(coco_config(both)), seed=0)["train"]) == 4
    assert len(build_splits(data_spec(coco_config(both, "dataset.layout=vsepp")), seed=0)["train"]) == 3


def test_a_root_with_neither_layout_names_both_and_what_each_lacks(tmp_path):
    (tmp_path / "annotations").mkdir()
    np.save(tmp_path / "annotations" / "coco_train_ids.npy", np.arange(5))
    cfg = compose_config("train", ["dataset=coco", f"dataset.root={tmp_path}"])
    with pytest.raises(ConfigError, match=rf"dataset.root={tmp_path} holds neither coco layout") as error:
        validate_train_config(cfg)
    message = str(error.value)
    assert "karpathy: Karpathy JSON, ROOT/dataset_coco.json" in message and "missing dataset_coco.json" in message
    assert "vsepp: VSE++/SCAN, ROOT/annotations/captions_{train,val}2014.json" in message
    assert "missing annotations/captions_train2014.json, annotations/captions_val2014.json, " in message
    assert "annotations/coco_train_ids.npy," not in message  # that one is there
    both_layouts = r"does not exist .*dataset_coco\.json .* or .*coco_\{train,dev,test,restval\}_ids\.npy"
    with pytest.raises(FileNotFoundError, match=both_layouts):
        data_spec(coco_config(tmp_path / "absent"))


def test_a_group_of_ids_spanning_two_images_names_the_id_file_index_and_ids(tmp_path):
    root = make_vsepp_coco_dataset(tmp_path, {"train": 2, "val": 1, "test": 5, "restval": 1})
    path = root / "annotations" / "coco_test_ids.npy"
    ids = np.load(path)
    ids[[9, 10]] = ids[[10, 9]]
    np.save(path, ids)
    with pytest.raises(DatasetError, match=r"2 problem\(s\)") as error:
        build_splits(data_spec(coco_config(root)), seed=0)
    message = str(error.value)
    group = ids[5:10].tolist()
    assert (f"{path}: index 5-9 (ids {group}): the ids belong to 2 images (COCO_val2014_000000001004.jpg, "
            f"COCO_val2014_000000001005.jpg); each 5 consecutive ids must be the captions of one image") in message
    assert f"{path}: index 10-14 (ids {ids[10:15].tolist()})" in message


def test_unknown_ids_bad_captions_and_missing_images_are_reported_together(tmp_path):
    root = make_vsepp_coco_dataset(tmp_path, {"train": 2, "val": 1, "test": 1, "restval": 1})
    captions_file = root / "annotations" / "captions_val2014.json"
    data = json.loads(captions_file.read_text())
    data["annotations"][5]["caption"] = "   "
    data["annotations"][12]["caption"] = ""
    captions_file.write_text(json.dumps(data))
    dev = root / "annotations" / "coco_dev_ids.npy"
    np.save(dev, np.append(np.load(dev)[:4], 7))
    (root / "images" / "train2014" / "COCO_train2014_000000001001.jpg").unlink()
    with pytest.raises(DatasetError, match=r"4 problem\(s\)") as error:
        build_splits(data_spec(coco_config(root)), seed=0)
    message = str(error.value)
    assert f"{dev}: index 0-4 (ids [50020, 50021, 50022, 50023, 7]): id(s) [7] are in neither" in message
    assert (f"{captions_file}: annotation 50030 (image COCO_val2014_000000001003.jpg): caption is empty or "
            f"whitespace only") in message
    assert f"{captions_file}: annotation 50042 (image COCO_val2014_000000001004.jpg): caption is empty" in message
    assert "COCO_train2014_000000001001.jpg: image file missing (train image" in message


def test_invalid_utf8_in_a_captions_file_names_it(tmp_path):
    root = make_vsepp_coco_dataset(tmp_path, {"train": 2, "val": 1, "test": 1, "restval": 1})
    captions_file = root / "annotations" / "captions_train2014.json"
    captions_file.write_bytes(captions_file.read_bytes().replace(b"picture 1 is", b"picture 1 \xff\xfe is", 1))
    with pytest.raises(DatasetError, match=rf"{captions_file}: 2 byte\(s\) are not valid UTF-8"):
        build_splits(data_spec(coco_config(root)), seed=0)
    splits = build_splits(data_spec(coco_config(root, "dataset.on_bad_text=replace")), seed=0)
    assert splits["train"].records[1].captions[0] == "picture 1 \ufffd\ufffd is green, caption 0"


def test_skip_bad_images_drops_bad_coco_images_in_the_vsepp_layout(tmp_path, caplog):
    root = make_vsepp_coco_dataset(tmp_path, {"train": 3, "val": 1, "test": 1, "restval": 1})
    (root / "images" / "val2014" / "COCO_val2014_000000001005.jpg").write_bytes(b"\xff\xd8 truncated")
    with caplog.at_level("WARNING"):
        splits = build_splits(data_spec(coco_config(root, "dataset.skip_bad_images=true")), seed=0)
    assert len(splits["train"]) == 3 and "skipped 1 bad image(s)" in caplog.text and "train 1" in caplog.text


def test_vsepp_images_listed_twice_in_a_split_or_in_two_splits_are_named_with_their_id_groups(tmp_path):
    root = make_vsepp_coco_dataset(tmp_path, {"train": 2, "val": 1, "test": 2, "restval": 1})
    annotations = root / "annotations"
    test_ids = np.load(annotations / "coco_test_ids.npy")
    np.save(annotations / "coco_test_ids.npy", np.concatenate([test_ids, test_ids[:5]]))
    dev_ids = np.load(annotations / "coco_dev_ids.npy")
    train_ids = np.load(annotations / "coco_train_ids.npy")
    np.save(annotations / "coco_dev_ids.npy", np.concatenate([dev_ids, train_ids[:5]]))
    with pytest.raises(DatasetError, match=r"2 problem\(s\)") as error:
        build_splits(data_spec(coco_config(root)), seed=0)
    message = str(error.value)
    test_file, dev_file = annotations / "coco_test_ids.npy", annotations / "coco_dev_ids.npy"
    assert (f"{root / 'images' / 'val2014' / 'COCO_val2014_000000001003.jpg'}: listed 2 times in the test split "
            f"(index 0-4 of {test_file}, index 10-14 of {test_file}); each image must be listed once") in message
    assert (f"{root / 'images' / 'train2014' / 'COCO_train2014_000000001000.jpg'}: in the train split (index 0-4 of "
            f"{annotations / 'coco_train_ids.npy'}) and the val split (index 5-9 of {dev_file}); the splits must not "
            f"share images") in message


def test_an_empty_vsepp_id_file_is_an_empty_split_naming_it_and_the_root(tmp_path):
    root = make_vsepp_coco_dataset(tmp_path, {"train": 2, "val": 1, "test": 1, "restval": 1})
    np.save(root / "annotations" / "coco_dev_ids.npy", np.array([], dtype=np.int64))
    with pytest.raises(DatasetError, match=r"1 problem\(s\)") as error:
        build_splits(data_spec(coco_config(root)), seed=0)
    assert (f"the val split is empty: {root / 'annotations' / 'coco_dev_ids.npy'} lists no val image "
            f"(dataset=coco, dataset.root={root})") in str(error.value)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["karpathy", "vsepp"])
def test_tiny_encoders_train_on_both_coco_layouts(tmp_path, tiny_training_config, layout):
    from hat.engine.loop import train

    counts = {"train": 8, "val": 5, "test": 5, "restval": 2}
    if layout == "vsepp":
        root = make_vsepp_coco_dataset(tmp_path / "data", counts)
    else:
        root = make_karpathy_dataset(tmp_path / "data", "coco", counts)
    cfg = tiny_training_config("dataset=coco", f"dataset.root={root}", "train.epochs=1")
    metrics = train(cfg, tmp_path / "run").test
    assert all(0.0 <= value <= 600.0 for name, value in metrics.items() if name.endswith("rsum"))
