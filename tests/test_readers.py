"""Readers of the real on-disk formats: V-JEPA CSV lists, Something-Something v2, EPIC-KITCHENS-100."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from jepa.data import csvlist, ek100, ssv2
from tests import fixtures as fx


@pytest.fixture(scope="module")
def lists(tmp_path_factory):
    return fx.make_video_lists(tmp_path_factory.mktemp("lists"))


@pytest.fixture(scope="module")
def ssv2_root(tmp_path_factory):
    return fx.make_ssv2(tmp_path_factory.mktemp("ssv2"), num_frames=6)


@pytest.fixture(scope="module")
def ek(tmp_path_factory):
    return fx.make_ek100(tmp_path_factory.mktemp("ek100"), with_frames=False)


# ------------------------------------------------------------------------------------------ csv lists

def test_csv_list_space_separated(lists):
    examples = csvlist.read_video_list(lists.plain)
    assert [(e["path"], e["label"]) for e in examples] == lists.entries[:2]
    assert [e["extra"]["line"] for e in examples] == [1, 2]
    assert all(e["extra"]["list"] == str(lists.plain) for e in examples)


def test_csv_list_double_colon_fallback_for_paths_with_spaces(lists):
    examples = csvlist.read_video_list(lists.spaced)
    assert [(e["path"], e["label"]) for e in examples] == lists.entries[2:]
    assert " " in examples[0]["path"] and examples[0]["path"].endswith("my clips/clip one.mp4")


def test_csv_list_relative_paths_root_and_blank_lines(tmp_path):
    path = tmp_path / "rel.csv"
    path.write_text("a/x.mp4 1\r\n\r\n/abs/y.mp4 2\r\n")
    examples = csvlist.read_video_list(path, root="/data")
    assert [(e["path"], e["label"], e["extra"]["line"]) for e in examples] == [
        ("/data/a/x.mp4", 1, 1), ("/abs/y.mp4", 2, 3)]


def test_csv_mixture_weights(lists):
    mix = csvlist.parse_mixture(f"{lists.plain}:0.25,{lists.spaced}:0.75")
    examples, weights = csvlist.read_mixture(mix)
    assert len(examples) == 4 and [e["extra"]["list_index"] for e in examples] == [0, 0, 1, 1]
    np.testing.assert_allclose(weights, [0.125, 0.125, 0.375, 0.375])
    assert csvlist.mixture([lists.plain, lists.spaced]).weights == (1.0, 1.0)
    with pytest.raises(csvlist.VideoListError, match="2 video lists but 1 weights"):
        csvlist.mixture([lists.plain, lists.spaced], [1.0])


@pytest.mark.parametrize("text, line, message", [
    ("a.mp4 1\nb.mp4 x\n", 2, "label 'x' is not an integer"),
    ("a.mp4 1\nmy clip.mp4 2\n", 2, "expected 'path label', found 3 field(s)"),
    ("a.mp4 1\nmy clip.mp4::2\n", 1, "expected 'path::label'"),       # mixed: the :: fallback fails on line 1
    ("a.mp4::1\nb.mp4::\n", 2, "label '' is not an integer"),
    ("a.mp4\n", 1, "expected 'path label', found 1 field(s)"),
])
def test_csv_list_errors_name_file_and_line(tmp_path, text, line, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(csvlist.VideoListError) as err:
        csvlist.read_video_list(path)
    assert f"{path}:{line}:" in str(err.value) and message in str(err.value)


# ---------------------------------------------------------------------------------------------- SSv2

def test_ssv2_fixture_is_in_the_distributed_format(ssv2_root):
    labels = json.loads((ssv2_root.labels_dir / "labels.json").read_text())
    assert labels["Something falling like a feather or paper"] == "4"  # string indices
    train = json.loads((ssv2_root.labels_dir / "train.json").read_text())
    assert isinstance(train[0]["id"], str) and "[" in train[0]["template"]
    assert (ssv2_root.labels_dir / "test-answers.csv").read_text().startswith("1420;Throwing something\n")


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_ssv2_splits(ssv2_root, split):
    examples, skipped = ssv2.read_split(ssv2_root.labels_dir, split, ssv2_root.video_dir)
    assert skipped == []
    assert {e["id"]: e["label"] for e in examples} == ssv2_root.expected[split]
    for e in examples:
        assert e["path"] == str(ssv2_root.video_dir / f"{e['id']}.webm")


def test_ssv2_bracketed_templates(ssv2_root):
    examples, _ = ssv2.read_split(ssv2_root.labels_dir, "train", ssv2_root.video_dir)
    by_id = {e["id"]: e for e in examples}
    assert ssv2.class_name("[Something] falling like a feather or paper") == "Something falling like a feather or paper"
    assert ssv2.class_name("Moving [part] of [something]") == "Moving part of something"
    assert by_id["42326"]["label"] == fx.SSV2_CLASSES.index("Something falling like a feather or paper")
    assert by_id["100904"]["label"] == fx.SSV2_CLASSES.index("Moving part of something")
    assert by_id["78687"]["extra"]["placeholders"] == ["potato", "vicks vaporub bottle"]
    names = ssv2.class_names(ssv2.read_labels(ssv2_root.labels_dir / "labels.json"))
    assert names == fx.SSV2_CLASSES


def test_ssv2_old_file_names_and_locate(tmp_path):
    root = fx.make_ssv2(tmp_path, old_names=True, num_frames=4)
    assert (root.labels_dir / "something-something-v2-train.json").exists()
    labels_dir, video_dir = ssv2.locate(tmp_path)
    assert (labels_dir, video_dir) == (root.labels_dir.resolve(), root.video_dir.resolve())
    examples, _ = ssv2.read_split(labels_dir, "validation", video_dir)
    assert {e["id"]: e["label"] for e in examples} == root.expected["validation"]


def test_ssv2_test_without_answers_is_unlabelled(ssv2_root, tmp_path):
    labels = tmp_path / "labels"
    shutil.copytree(ssv2_root.labels_dir, labels)
    (labels / "test-answers.csv").unlink()
    examples, _ = ssv2.read_split(labels, "test", ssv2_root.video_dir)
    assert [e["label"] for e in examples] == [-1, -1]


def _broken_labels(ssv2_root, tmp_path, split_text: str | None = None, labels_text: str | None = None):
    labels = tmp_path / "labels"
    shutil.copytree(ssv2_root.labels_dir, labels)
    if split_text is not None:
        (labels / "train.json").write_text(split_text)
    if labels_text is not None:
        (labels / "labels.json").write_text(labels_text)
    return labels


def test_ssv2_bad_json_names_file_and_position(ssv2_root, tmp_path):
    text = '[{"id": "1", "template": "Throwing [something]"},\n {"id": }]'
    labels = _broken_labels(ssv2_root, tmp_path, split_text=text)
    with pytest.raises(ssv2.Ssv2FormatError) as err:
        ssv2.read_split(labels, "train", ssv2_root.video_dir)
    assert f"{labels / 'train.json'}:2:" in str(err.value) and "invalid JSON" in str(err.value)


def test_ssv2_bad_label_index(ssv2_root, tmp_path):
    labels = _broken_labels(ssv2_root, tmp_path, labels_text='{"Throwing something": "zero"}')
    with pytest.raises(ssv2.Ssv2FormatError, match="labels.json: class 'Throwing something': index 'zero'"):
        ssv2.read_split(labels, "train", ssv2_root.video_dir)


def test_ssv2_missing_field(ssv2_root, tmp_path):
    records = [{"id": "78687", "template": "Holding [something] next to [something]"}, {"id": "5", "label": "x"}]
    labels = _broken_labels(ssv2_root, tmp_path, split_text=json.dumps(records))
    with pytest.raises(ssv2.Ssv2FormatError) as err:
        ssv2.read_split(labels, "train", ssv2_root.video_dir)
    assert str(err.value) == f"{labels / 'train.json'}: record 1 (id '5'): field 'template': missing"
    examples, skipped = ssv2.read_split(labels, "train", ssv2_root.video_dir, on_error="skip")
    assert [e["id"] for e in examples] == ["78687"]
    assert [(s["record"], s["field"]) for s in skipped] == [(1, "template")]


def test_ssv2_unknown_template(ssv2_root, tmp_path):
    records = [{"id": "78687", "template": "Juggling [something]", "label": "juggling balls", "placeholders": []}]
    labels = _broken_labels(ssv2_root, tmp_path, split_text=json.dumps(records))
    with pytest.raises(ssv2.Ssv2FormatError) as err:
        ssv2.read_split(labels, "train", ssv2_root.video_dir)
    message = str(err.value)
    assert f"{labels / 'train.json'}: record 0 (id '78687')" in message
    assert "unknown template 'Juggling [something]'" in message and "'Juggling something'" in message


def test_ssv2_missing_video_raise_or_skip(tmp_path):
    root = fx.make_ssv2(tmp_path, missing_ids=("3694",), num_frames=4)
    with pytest.raises(ssv2.Ssv2FormatError) as err:
        ssv2.read_split(root.labels_dir, "train", root.video_dir)
    assert f"{root.labels_dir / 'train.json'}: record 3 (id '3694')" in str(err.value)
    assert f"video not found: {root.video_dir / '3694.webm'}" in str(err.value)
    examples, skipped = ssv2.read_split(root.labels_dir, "train", root.video_dir, on_error="skip")
    assert len(examples) == len(fx.SSV2_TRAIN) - 1 and [s["id"] for s in skipped] == ["3694"]


SUBSET = (1, 3, 4)  # a class-subset labels.json: indices 0, 2 and 5 unused


def test_ssv2_subset_labels_with_gaps_keep_their_ids(tmp_path):
    root = fx.make_ssv2(tmp_path, num_frames=4, label_ids=SUBSET)
    labels = ssv2.read_labels(root.labels_dir / "labels.json")
    assert labels == {fx.SSV2_CLASSES[i]: i for i in SUBSET}  # the file's own indices, not 0..2
    assert ssv2.num_classes(labels) == 5
    assert ssv2.class_names(labels) == ["<unused 0>", fx.SSV2_CLASSES[1], "<unused 2>", fx.SSV2_CLASSES[3],
                                        fx.SSV2_CLASSES[4]]
    for split in ("train", "validation", "test"):
        examples, skipped = ssv2.read_split(root.labels_dir, split, root.video_dir, on_error="skip")
        assert {e["id"]: e["label"] for e in examples} == root.expected[split]
        assert len(examples) + len(skipped) == len({"train": fx.SSV2_TRAIN, "validation": fx.SSV2_VALIDATION,
                                                    "test": fx.SSV2_TEST}[split])
        assert all("is not in labels.json" in s["reason"] for s in skipped)
    assert root.expected["train"] == {"78687": 1, "42326": 4, "3694": 3} and root.expected["test"] == {"220847": 4}
    # records of the classes left out are errors unless skipped, as any unknown template
    with pytest.raises(ssv2.Ssv2FormatError, match=r"record 2 \(id '100904'\): field 'template': unknown template"):
        ssv2.read_split(root.labels_dir, "train", root.video_dir)
    with pytest.raises(ssv2.Ssv2FormatError, match=r"test-answers.csv:1: class 'Throwing something' is not in"):
        ssv2.read_split(root.labels_dir, "test", root.video_dir)


@pytest.mark.parametrize("text, message", [
    ('{"Throwing something": "3", "Moving part of something": "3"}',
     "class 'Moving part of something': index 3 appears twice (also class 'Throwing something')"),
    ('{"Throwing something": "3", "Moving part of something": "1", "Throwing something": "4"}',
     "class 'Throwing something': class name appears twice (indices 3 and 4)"),
    ('{"Throwing something": "-1"}', "class 'Throwing something': index '-1' is negative"),
    ('{"Throwing something": 1.5}', "class 'Throwing something': index 1.5 is not an integer"),
])
def test_ssv2_repeated_or_bad_class_indices_are_refused(ssv2_root, tmp_path, text, message):
    labels = _broken_labels(ssv2_root, tmp_path, labels_text=text)
    with pytest.raises(ssv2.Ssv2FormatError) as err:
        ssv2.read_split(labels, "train", ssv2_root.video_dir, on_error="skip")
    assert str(err.value) == f"{labels / 'labels.json'}: {message}"


# --------------------------------------------------------------------------------------------- EK100

def test_ek100_fixture_is_in_the_distributed_format(ek):
    verbs = (ek.annotations / "EPIC_100_verb_classes.csv").read_bytes()
    assert b"\r\n" in verbs and not verbs.endswith(b"\n")
    train = (ek.annotations / "EPIC_100_train.csv").read_text()
    assert train.startswith(",".join(fx.EK100_COLUMNS) + "\n")
    assert ("P01_11_0,P01,P01_11,00:00:00.560,00:00:00.00,00:00:01.89,1,113,take plate,take,0,plate,2,"
            "['plate'],[2]\n") in train
    assert "\"['plate', 'cupboard']\",\"[2, 4]\"" in train and "P01_11_2,P01,P01_11,,00:00:04.80" in train
    test = (ek.annotations / "EPIC_100_test_timestamps.csv").read_text().splitlines()
    assert len(test[0].split(",")) == 8


def test_ek100_timestamps():
    assert ek100.parse_timestamp("00:00:01.89") == pytest.approx(1.89)
    assert ek100.parse_timestamp("01:02:03.5") == pytest.approx(3723.5)
    assert ek100.parse_timestamp("00:00:00.560") == pytest.approx(0.56)
    with pytest.raises(ValueError):
        ek100.parse_timestamp("1:75:00.00")


def test_ek100_class_files_and_video_info(ek):
    verbs = ek100.read_classes(ek.annotations / "EPIC_100_verb_classes.csv")
    assert [v.key for v in verbs] == [v[1] for v in fx.EK100_VERBS]
    assert verbs[-1].category == "block" and verbs[0].instances[:2] == ("take", "grab")
    info = ek100.read_video_info(ek.annotations / "EPIC_100_video_info.csv")
    assert info["P01_11"].fps == pytest.approx(59.94, abs=1e-3) and info["P01_101"].fps == 50.0
    assert info["P09_07"].fps == pytest.approx(29.97, abs=1e-3) and info["P01_101"].width == 160


def test_ek100_train_frames_recomputed_with_the_real_fps(ek):
    examples, skipped = ek100.read_split(ek.annotations, "train", ek.root)
    assert skipped == [] and len(examples) == len(fx.EK100_TRAIN)
    for e in examples:
        x = e["extra"]
        fps = ek.video_fps[x["video_id"]]
        assert x["start_frame"] == round(x["start_sec"] * fps) and x["stop_frame"] == round(x["stop_sec"] * fps)
        csv_rate = 50 if x["video_id"] == "P01_101" else 60  # the CSV's own convention, kept as csv_*
        assert x["csv_start_frame"] == max(1, round(x["start_sec"] * csv_rate))
        assert x["observed_stop_sec"] == pytest.approx(x["start_sec"] - 1.0)
        assert e["path"] == str(ek.root / "P01" / "videos" / f"{x['video_id']}.MP4") or x["video_id"] == "P09_07"
    p09 = next(e for e in examples if e["extra"]["video_id"] == "P09_07")
    assert p09["path"] == str(ek.root / "P09" / "videos" / "P09_07.MP4")
    assert p09["extra"]["csv_start_frame"] == 225 and p09["extra"]["start_frame"] == 112  # 3.75 s at 60 vs 29.97
    first = next(e for e in examples if e["id"] == "P01_11_0")["extra"]
    assert (first["csv_start_frame"], first["start_frame"], first["narration_sec"]) == (1, 0, pytest.approx(0.56))
    assert next(e for e in examples if e["id"] == "P01_11_2")["extra"]["narration_sec"] is None
    multi = next(e for e in examples if e["id"] == "P01_11_1")["extra"]
    assert multi["all_nouns"] == ["plate", "cupboard"] and multi["all_noun_classes"] == [2, 4]


def test_ek100_actions_and_unseen_validation_pairs(ek):
    train, _ = ek100.read_split(ek.annotations, "train", ek.root)
    pairs = ek.train_actions
    for e in train:
        x = e["extra"]
        assert e["label"] == x["action_class"] == pairs.index((x["verb_class"], x["noun_class"]))
    val, skipped = ek100.read_split(ek.annotations, "validation", ek.root)
    assert [e["id"] for e in val] == ["P01_11_3", "P01_101_3", "P09_07_1"]
    assert [(s["kind"], s["id"]) for s in skipped] == [("unseen_action", "P01_11_4")]
    assert f"{ek.annotations / 'EPIC_100_validation.csv'}:3:" in skipped[0]["message"]
    vocab = ek100.read_vocabulary(ek.annotations)
    assert vocab.to_json()["action_classes"] == [list(p) for p in pairs]
    assert vocab.action_names[pairs.index((0, 2))] == "take plate"


def test_ek100_class_files_with_gaps_keep_their_ids(tmp_path):
    ek = fx.make_ek100(tmp_path, verb_ids=(0, 1, 3, 4), noun_ids=(1, 2, 4))  # verb 2, nouns 0 and 3 left out
    verbs = ek100.read_classes(ek.annotations / "EPIC_100_verb_classes.csv")
    assert [(v.id, v.key) for v in verbs] == [(0, "take"), (1, "put"), (3, "open"), (4, "close")]
    assert ek100.class_keys(verbs) == ["take", "put", "<unused 2>", "open", "close"]
    vocab = ek100.read_vocabulary(ek.annotations)
    meta = vocab.to_json()
    assert meta["noun_classes"] == ["<unused 0>", "spoon", "plate", "<unused 3>", "cupboard"]
    assert (meta["num_verb_classes"], meta["num_noun_classes"]) == (5, 5)
    names = dict(zip(map(tuple, meta["action_classes"]), meta["action_names"]))
    assert names[(3, 0)] == "open 0" and names[(4, 3)] == "close 3" and names[(1, 2)] == "put plate"
    assert names[(0, 1)] == "take spoon" and names[(2, 1)] == "2 spoon"  # keys looked up by id, not position
    train, skipped = ek100.read_split(ek.annotations, "train", ek.root)
    assert skipped == [] and [e["label"] for e in train] == [ek.train_actions.index(
        (e["extra"]["verb_class"], e["extra"]["noun_class"])) for e in train]


@pytest.mark.parametrize("rows, message", [
    ([("0", "take"), ("2", "put"), ("2", "wash")], "4: field 'id': 2 appears twice (also on line 3)"),
    ([("0", "take"), ("3", "put"), ("5", "take")], "4: field 'key': 'take' appears twice (also on line 2)"),
    ([("0", "take"), ("-2", "put")], "3: field 'id': '-2' is negative"),
])
def test_ek100_repeated_or_bad_class_ids_are_refused(tmp_path, rows, message):
    path = tmp_path / "EPIC_100_verb_classes.csv"
    path.write_bytes("\r\n".join(["id,key,instances,category"] + [f"{i},{k},['{k}'],c" for i, k in rows]).encode())
    with pytest.raises(ek100.Ek100FormatError) as err:
        ek100.read_classes(path)
    assert str(err.value) == f"{path}:{message}"


def test_ek100_test_split_and_frames_layout(ek):
    test, _ = ek100.read_split(ek.annotations, "test", ek.root, check_videos=False)
    assert [(e["id"], e["label"], e["extra"]["verb_class"]) for e in test] == [("P01_101_4", -1, -1)]
    frames, _ = ek100.read_split(ek.annotations, "validation", ek.root, layout="frames", check_videos=False)
    assert frames[0]["path"] == str(ek.root / "P01" / "rgb_frames" / "P01_11")
    assert ek100.frame_file(frames[0]["path"], 0).name == "frame_0000000001.jpg"


def _copy_annotations(ek, tmp_path):
    ann = tmp_path / "ann"
    shutil.copytree(ek.annotations, ann)
    return ann


def test_ek100_missing_column(ek, tmp_path):
    ann = _copy_annotations(ek, tmp_path)
    path = ann / "EPIC_100_validation.csv"
    rows = [line.split(",") for line in path.read_text().splitlines()]
    # drop the `stop_timestamp` column (index 5) everywhere
    path.write_text("\n".join(",".join(r[:5] + r[6:]) for r in rows) + "\n")
    with pytest.raises(ek100.Ek100FormatError) as err:
        ek100.read_split(ann, "validation", ek.root)
    assert f"{path}:1: missing column(s) ['stop_timestamp']" in str(err.value)


def test_ek100_bad_timestamp_names_line_and_field(ek, tmp_path):
    ann = _copy_annotations(ek, tmp_path)
    path = ann / "EPIC_100_train.csv"
    path.write_text(path.read_text().replace("00:00:02.50", "00:02.50", 1))
    with pytest.raises(ek100.Ek100FormatError) as err:
        ek100.read_split(ann, "train", ek.root)
    assert f"{path}:3: field 'start_timestamp'" in str(err.value)


def test_ek100_missing_video_raise_or_skip(tmp_path):
    ek = fx.make_ek100(tmp_path, missing_video="P01_101")
    with pytest.raises(ek100.Ek100FormatError) as err:
        ek100.read_split(ek.annotations, "train", ek.root)
    missing = ek.root / "P01" / "videos" / "P01_101.MP4"
    assert f"{ek.annotations / 'EPIC_100_train.csv'}:5: narration 'P01_101_0'" in str(err.value)
    assert f"video not found: {missing}" in str(err.value)
    examples, skipped = ek100.read_split(ek.annotations, "train", ek.root, on_error="skip")
    assert {s["id"] for s in skipped} == {"P01_101_0", "P01_101_1", "P01_101_2"}
    assert all(e["extra"]["video_id"] != "P01_101" for e in examples) and len(examples) == 4


def test_ek100_video_missing_from_video_info(ek, tmp_path):
    ann = _copy_annotations(ek, tmp_path)
    info = ann / "EPIC_100_video_info.csv"
    info.write_text("\n".join(l for l in info.read_text().splitlines() if not l.startswith("P09_07")) + "\n")
    with pytest.raises(ek100.Ek100FormatError, match="video 'P09_07' is not in EPIC_100_video_info.csv"):
        ek100.read_split(ann, "train", ek.root)
