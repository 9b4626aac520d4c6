"""A file's class is the folder it lives in, never the path the walk reached it by.

Directory symlinks into other class folders (or to folders holding class folders) are not
followed, file symlinks to another class's files are not counted, and a file outside the
class folders reachable from two classes is kept out of both; each case is reported.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from snugtune.data import scan_folder
from snugtune.data.results import ScanResult
from snugtune.errors import DataError

WHY = "(a file's class is the folder it lives in)"


def _img(path: Path, colour: tuple[int, int, int] = (10, 200, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 16), colour).save(path)


def _tree(root: Path, spec: dict[str, int]) -> Path:
    """``spec``: folder (relative, may be nested) -> number of PNGs written in it."""
    for folder, n in spec.items():
        for i in range(n):
            _img(root / folder / f"{i}.png")
    return root


def _skipped(root: Path, r: ScanResult) -> dict[str, str]:
    return {os.path.relpath(i.path, root): i.reason for i in r.skipped}


def _labelled(root: Path, r: ScanResult) -> dict[str, str]:
    """Sample path relative to root -> its class name."""
    return {os.path.relpath(s.path, root): r.classes[s.label] for s in r.samples}


def _assert_labels_follow_real_folders(root: Path, r: ScanResult) -> None:
    real_root = os.path.realpath(root)
    for s in r.samples:
        real = os.path.relpath(os.path.realpath(s.path), real_root)
        if not real.startswith(".."):  # files outside the data root keep the linking class
            assert real.split(os.sep)[0] == r.classes[s.label], s.path


@pytest.mark.parametrize("holder", ["a", "c"])  # walked before b, and after it
def test_link_to_another_class_folder_is_not_followed(tmp_path: Path, holder: str) -> None:
    root = _tree(tmp_path / "d", {"a": 2, "b": 3, "c": 1})
    os.symlink("../b", root / holder / "more")
    r = scan_folder(root)
    own = {"a": 2, "c": 1}
    assert r.class_counts() == {"a": own["a"], "b": 3, "c": own["c"]}
    assert _skipped(root, r) == {
        f"{holder}/more": f"link into class folder 'b': not followed {WHY}"
    }
    _assert_labels_follow_real_folders(root, r)


def test_link_to_the_data_root_is_not_followed(tmp_path: Path) -> None:
    root = _tree(tmp_path / "d", {"a": 2, "b": 3})
    os.symlink("..", root / "a" / "up")
    os.symlink(tmp_path, root / "b" / "way_up")  # an ancestor of the root
    r = scan_folder(root)
    assert r.class_counts() == {"a": 2, "b": 3}
    held = "link to a folder holding class folders 'a', 'b': not followed"
    assert _skipped(root, r) == {"a/up": f"{held} {WHY}", "b/way_up": f"{held} {WHY}"}


def test_link_to_a_sub_folder_of_another_class(tmp_path: Path) -> None:
    root = _tree(tmp_path / "d", {"a": 2, "b": 1, "b/winter/snow": 2})
    os.symlink("../b/winter", root / "a" / "part")
    r = scan_folder(root)
    assert r.class_counts() == {"a": 2, "b": 3}
    assert _skipped(root, r) == {"a/part": f"link into class folder 'b': not followed {WHY}"}
    assert _labelled(root, r)["b/winter/snow/0.png"] == "b"


def test_file_links_across_classes_are_not_counted(tmp_path: Path) -> None:
    root = _tree(tmp_path / "d", {"a": 2, "b": 2})
    os.symlink("../b/0.png", root / "a" / "x.png")
    os.symlink(root / "a" / "1.png", root / "b" / "y.png")
    r = scan_folder(root)
    assert r.class_counts() == {"a": 2, "b": 2}
    assert _skipped(root, r) == {
        "a/x.png": f"links to a file of class 'b': not counted for 'a' {WHY}",
        "b/y.png": f"links to a file of class 'a': not counted for 'b' {WHY}",
    }
    _assert_labels_follow_real_folders(root, r)


def test_external_file_reachable_from_two_classes_is_kept_out_of_both(tmp_path: Path) -> None:
    root = _tree(tmp_path / "d", {"a": 2, "b": 2, "c": 1})
    _tree(tmp_path / "ext", {"shared": 2, ".": 1})
    os.symlink(tmp_path / "ext" / "0.png", root / "a" / "e.png")
    os.symlink(tmp_path / "ext" / "0.png", root / "c" / "e.png")
    os.symlink(tmp_path / "ext" / "shared", root / "a" / "shared")  # folder links, too
    os.symlink(tmp_path / "ext" / "shared", root / "b" / "shared")
    r = scan_folder(root)
    assert r.class_counts() == {"a": 2, "b": 2, "c": 1}
    assert _skipped(root, r) == {
        "a/e.png": "conflicting labels: reachable from classes a, c",
        "c/e.png": "conflicting labels: reachable from classes a, c",
        "a/shared/0.png": "conflicting labels: reachable from classes a, b",
        "a/shared/1.png": "conflicting labels: reachable from classes a, b",
        "b/shared/0.png": "conflicting labels: reachable from classes a, b",
        "b/shared/1.png": "conflicting labels: reachable from classes a, b",
    }


def test_class_left_with_only_conflicting_files_says_why(tmp_path: Path) -> None:
    root = _tree(tmp_path / "d", {"a": 2})
    (root / "b").mkdir()
    _img(tmp_path / "ext" / "e.png")
    os.symlink(tmp_path / "ext" / "e.png", root / "a" / "e.png")
    os.symlink(tmp_path / "ext" / "e.png", root / "b" / "e.png")
    with pytest.raises(DataError, match=r"'b' .*1 files, none usable: 1 conflicting labels"):
        scan_folder(root)


def test_external_folder_linked_from_one_class_is_followed(tmp_path: Path) -> None:
    root = _tree(tmp_path / "d", {"a": 1, "b": 2})
    _tree(tmp_path / "disk2" / "cats", {".": 2, "old": 1})
    os.symlink(tmp_path / "disk2" / "cats", root / "a" / "more")
    os.symlink(tmp_path / "disk2" / "cats" / "0.png", root / "a" / "fav.png")  # same file
    r = scan_folder(root)
    assert r.class_counts() == {"a": 4, "b": 2}
    assert _labelled(root, r)["a/more/old/0.png"] == "a"
    # neither path is free of links: the first walked is kept
    assert _skipped(root, r) == {"a/more/0.png": f"duplicate path: same file as {root}/a/fav.png"}


def test_within_a_class_the_path_without_a_link_is_kept(tmp_path: Path) -> None:
    root = _tree(tmp_path / "d", {"a": 1, "b": 1})
    os.symlink("0.png", root / "a" / "-alias.png")  # walked before 0.png
    r = scan_folder(root)
    assert _labelled(root, r) == {"a/0.png": "a", "b/0.png": "b"}
    assert _skipped(root, r) == {"a/-alias.png": f"duplicate path: same file as {root}/a/0.png"}


def test_class_folder_linking_into_another_class(tmp_path: Path) -> None:
    root = _tree(tmp_path / "d", {"a": 2, "a/sub": 2, "c": 1})
    os.symlink("a/sub", root / "b")  # DATA/b -> a/sub: sub's images are class b's only
    r = scan_folder(root)
    assert r.class_counts() == {"a": 2, "b": 2, "c": 1}
    assert _skipped(root, r) == {
        "a/sub": f"folder of class 'b' ({root}/b links here): not scanned as class 'a'"
    }


def test_train_val_links_name_the_split(tmp_path: Path) -> None:
    _tree(tmp_path, {"train/a": 2, "train/b": 2, "val/a": 1, "val/b": 1})
    os.symlink("../../val/a", tmp_path / "train" / "a" / "v")
    os.symlink("../../val/b/0.png", tmp_path / "train" / "a" / "vb.png")
    os.symlink("../../val", tmp_path / "train" / "b" / "all_val")
    _img(tmp_path / "ext.png")  # outside the class folders, linked from train/a and val/a
    os.symlink("../../ext.png", tmp_path / "train" / "a" / "e.png")
    os.symlink("../../ext.png", tmp_path / "val" / "a" / "e.png")
    r = scan_folder(tmp_path)
    assert r.class_counts() == {"a": 3, "b": 2}
    assert r.val_class_counts() == {"a": 1, "b": 1}
    assert _skipped(tmp_path, r) == {
        "train/a/v": f"link into class folder 'val/a': not followed {WHY}",
        "train/a/vb.png": f"links to a file of class 'val/b': not counted for 'a' {WHY}",
        "train/b/all_val": (
            f"link to a folder holding class folders 'val/a', 'val/b': not followed {WHY}"
        ),
        "val/a/e.png": f"duplicate path: same file as {tmp_path}/train/a/e.png",
    }
