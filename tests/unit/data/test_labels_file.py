"""Labels from a CSV, TSV or JSONL file: parsing, matching rows to files, and every bad row
reported with its line number (never a crash nor a silent drop)."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from snugtune.data import LabelsSpec, ScanResult, make_image_folder, scan_folder, split_folder
from snugtune.data.doctor import diagnose
from snugtune.data.labels_file import find_labels_file, read_rows
from snugtune.errors import DataError


def _img(path: Path, colour: tuple[int, int, int] = (10, 200, 30), size: int = 16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path)
    return path


@pytest.fixture
def flat(tmp_path: Path) -> Path:
    """A Kaggle-style flat folder ``train/<id>.png`` (3 cats, 3 dogs), no labels file yet."""
    made = make_image_folder(tmp_path / "made", classes=2, per_class=3, size=32, seed=1)
    root = tmp_path / "train"
    root.mkdir()
    for c, name in ((0, "c"), (1, "d")):
        for i in range(3):
            (made / f"class_{c}" / f"img_{i}.png").rename(root / f"{name}{i}.png")
    shutil.rmtree(made)
    return root


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _kaggle(tmp_path: Path, *extra: str) -> Path:
    rows = ["id,label", "c0,cat", "c1,cat", "c2,cat", "d0,dog", "d1,dog", "d2,dog", *extra]
    return _write(tmp_path / "train.csv", rows)


def _reasons(scan: ScanResult) -> dict[str, str]:
    """Skipped entries as {path relative to the scan's parent folder: reason}."""
    base = Path(scan.root).parent
    return {os.path.relpath(i.path, base): i.reason for i in scan.skipped}


# --- parsing -----------------------------------------------------------------------------------


def test_csv_rows_carry_their_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "l.csv"
    path.write_text('\ufefffile_name,label\n"a.png", cat \n\n"multi\nline.png",dog\nb.png,x,y\n',
                    encoding="utf-8")
    rows, malformed = read_rows(path, LabelsSpec())
    assert [(r.line, r.path, r.label) for r in rows] == [
        (2, "a.png", "cat"), (4, "multi\nline.png", "dog")]  # BOM dropped, spaces stripped
    assert malformed == [(6, "malformed row (3 fields, the header has 2)")]


def test_tsv_and_chosen_columns(tmp_path: Path) -> None:
    path = _write(tmp_path / "l.tsv", ["label\tid\tsource", "cat\ta\tweb", "dog\tb"])
    rows, malformed = read_rows(path, LabelsSpec(path_column="id"))
    assert [(r.line, r.path, r.label) for r in rows] == [(2, "a", "cat")]
    assert malformed == [(3, "malformed row (2 fields, the header has 3)")]


def test_jsonl_rows_and_malformed_lines(tmp_path: Path) -> None:
    path = _write(tmp_path / "l.jsonl", [
        json.dumps({"file_name": "a.png", "label": "cat"}),
        "{not json",
        "",
        json.dumps(["a.png", "cat"]),
        json.dumps({"file_name": "b.png"}),
        json.dumps({"file_name": 7, "label": 3}),
        json.dumps({"file_name": "c.png", "label": None}),
        json.dumps({"file_name": "d.png", "label": ["x"]}),
    ])
    rows, malformed = read_rows(path, LabelsSpec())
    assert [(r.line, r.path, r.label) for r in rows] == [
        (1, "a.png", "cat"), (6, "7", "3"), (7, "c.png", "")]
    assert [line for line, _ in malformed] == [2, 4, 5, 8]
    why = dict(malformed)
    assert why[2].startswith("invalid JSON (")
    assert why[4] == "not a JSON object (list)"
    assert why[5] == "malformed row (no 'label' key)"
    assert why[8] == "'label' must be text or a number, not list"


@pytest.mark.parametrize(("name", "text", "columns"), [
    ("l.csv", "id,class\na,b\n", "'id', 'class'"),
    ("l.tsv", "", "none"),
    ("l.jsonl", '{"image": "a.png", "label": "cat"}\n', "'image', 'label'"),
])
def test_a_missing_column_is_one_error_naming_the_columns_and_the_flag(
        flat: Path, tmp_path: Path, name: str, text: str, columns: str) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(DataError) as err:
        scan_folder(flat, labels=LabelsSpec(str(tmp_path / name)))
    msg = str(err.value)
    assert "\n" not in msg and f"(columns: {columns})" in msg
    assert "path column 'file_name'" in msg and "--path-column NAME" in msg
    if name != "l.jsonl":
        assert "label column 'label'" in msg and "--label-column NAME" in msg


def test_other_formats_missing_files_and_other_encodings_are_clear_errors(
        flat: Path, tmp_path: Path) -> None:
    (tmp_path / "l.json").write_text("[]")
    with pytest.raises(DataError, match=r"not a \.csv, \.tsv or \.jsonl file"):
        scan_folder(flat, labels=LabelsSpec(str(tmp_path / "l.json")))
    with pytest.raises(DataError, match=r"'nope.csv' does not exist.*--labels"):
        scan_folder(flat, labels=LabelsSpec("nope.csv"))
    (tmp_path / "latin.csv").write_bytes("file_name,label\nc0,caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"is not UTF-8 text.*save it as UTF-8"):
        scan_folder(flat, labels=LabelsSpec(str(tmp_path / "latin.csv")))


# --- matching rows to files --------------------------------------------------------------------


def test_kaggle_ids_without_extension_in_a_flat_folder(flat: Path, tmp_path: Path) -> None:
    labels = _kaggle(tmp_path)
    scan = scan_folder(flat, labels=LabelsSpec(str(labels), path_column="id"))
    assert scan.classes == ("cat", "dog")
    assert scan.class_counts() == {"cat": 3, "dog": 3}
    assert [Path(s.path).name for s in scan.samples] == [
        "c0.png", "c1.png", "c2.png", "d0.png", "d1.png", "d2.png"]
    assert scan.skipped == ()
    assert scan.labels_file == str(labels) and len(scan.labels_sha256) == 64
    assert ScanResult.from_dict(json.loads(json.dumps(scan.to_dict()))) == scan


def test_every_bad_row_is_reported_with_its_line(flat: Path, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    _img(flat / "amb.jpg")
    _img(flat / "amb.png")
    _img(flat / "extra.png")
    (flat / "notes.txt").write_text("x")
    labels = _kaggle(tmp_path,
                     "c0,dog",        # line 8: c0 had cat on line 2: conflicting
                     "d1,dog",        # line 9: d1 again, same label: duplicate row
                     "gone,cat",      # line 10: no such file
                     "d2.png,",       # line 11: empty label
                     ",cat",          # line 12: empty path
                     "amb,cat",       # line 13: two files match
                     "notes.txt,cat",  # line 14: not an image
                     "a,b,c")         # line 15: wrong field count
    with caplog.at_level(logging.WARNING, logger="snugtune.data"):
        scan = scan_folder(flat, labels=LabelsSpec(str(labels), path_column="id"))
    assert [i.reason for i in scan.skipped] == [
        "conflicting labels: train.csv lines 2 (cat), 8 (dog): not used",
        "train.csv line 9: duplicate row of line 6 (d1.png, dog): used once",
        "train.csv line 10: no such file",
        "train.csv line 11: empty label",
        "train.csv line 12: empty id",
        "train.csv line 13: ambiguous: amb.jpg, amb.png match",
        "train.csv line 14: not an image file (.txt)",
        "train.csv line 15: malformed row (3 fields, the header has 2)",
        "no row in train.csv: not used",
    ]
    assert [os.path.relpath(i.path, tmp_path) for i in scan.skipped] == [
        "train/c0.png", "train.csv", "train/gone", "train/d2.png", "train.csv", "train/amb",
        "train/notes.txt", "train.csv", "train/extra.png"]  # amb.* are named: not "no row"
    assert scan.class_counts() == {"cat": 2, "dog": 3}  # c0 in neither; d1 once; d2 (line 7) kept
    warning = " ".join(r.getMessage() for r in caplog.records)
    for kind in ("conflicting labels 1", "duplicate rows 1", "no such file 1", "empty label 1",
                 "empty id 1", "ambiguous 1", "not an image file 1", "malformed lines 1",
                 "images without a row 1"):
        assert kind in warning, kind


def test_a_file_of_two_rows_with_two_labels_leaves_no_empty_class(
        flat: Path, tmp_path: Path) -> None:
    labels = _kaggle(tmp_path, "c1.png,cta")  # a typo's only file conflicts: no class 'cta'
    scan = scan_folder(flat, labels=LabelsSpec(str(labels), path_column="id"))
    assert scan.classes == ("cat", "dog")
    assert _reasons(scan)["train/c1.png"] == (
        "conflicting labels: train.csv lines 3 (cat), 8 (cta): not used")


def test_paths_relative_to_the_data_folder_in_sub_folders_and_by_other_spellings(
        tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "data", classes=2, per_class=2, size=16)
    labels = _write(tmp_path / "l.csv", [
        "file_name,label", "class_0/img_0.png,a", "./class_0/img_1,a", "class_1/../class_1/img_0,b",
        f"{root / 'class_1' / 'img_1.png'},b"])
    scan = scan_folder(root, labels=LabelsSpec(str(labels)))
    assert scan.class_counts() == {"a": 2, "b": 2} and scan.skipped == ()


def test_no_row_naming_a_file_says_where_the_files_are(flat: Path, tmp_path: Path) -> None:
    labels = _kaggle(tmp_path)
    with pytest.raises(DataError) as err:
        scan_folder(tmp_path, labels=LabelsSpec(str(labels), path_column="id"))
    msg = str(err.value)
    assert "No row of" in msg and "(line 2: 'c0')" in msg
    assert f"they are in {flat}: pass that folder as the data folder" in msg


def test_fewer_than_two_labels(flat: Path, tmp_path: Path) -> None:
    labels = _write(tmp_path / "l.csv", ["id,label", "c0,cat", "c1,cat"])
    with pytest.raises(DataError, match=r"1 label\(s\) \['cat'\].*need at least 2 classes"):
        scan_folder(flat, labels=LabelsSpec(str(labels), path_column="id"))


def test_rows_that_all_lack_a_label_say_so(flat: Path, tmp_path: Path) -> None:
    labels = _write(tmp_path / "l.csv", ["id,label", "c0,", "c1,"])
    with pytest.raises(DataError, match=r"0 label\(s\) \[\] in .*l\.csv' \(6 rows or files "
                                        r"skipped, first: l\.csv line 2: empty label\)"):
        scan_folder(flat, labels=LabelsSpec(str(labels), path_column="id"))


def test_a_class_with_no_usable_image_names_the_labels_file(flat: Path, tmp_path: Path) -> None:
    (flat / "bad.png").write_bytes(b"")
    labels = _write(tmp_path / "l.csv", ["id,label", "c0,cat", "bad,dog"])
    with pytest.raises(DataError) as err:
        scan_folder(flat, labels=LabelsSpec(str(labels), path_column="id"))
    assert "'dog' (1 files, none usable: 1 zero-byte file)" in str(err.value)
    assert "remove its rows" in str(err.value)


def test_the_order_of_the_rows_changes_nothing(flat: Path, tmp_path: Path) -> None:
    lines = _kaggle(tmp_path).read_text().splitlines()
    reordered = _write(tmp_path / "reordered.csv", [lines[0], *reversed(lines[1:])])
    first = scan_folder(flat, labels=LabelsSpec(str(tmp_path / "train.csv"), path_column="id"))
    again = scan_folder(flat, labels=LabelsSpec(str(reordered), path_column="id"))
    assert again.samples == first.samples and again.classes == first.classes


# --- the folder's metadata file (Hugging Face imagefolder) -------------------------------------


def test_metadata_csv_in_the_folder_is_used_without_the_flag(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = make_image_folder(tmp_path / "data", classes=2, per_class=3, size=16)
    rows = ["file_name,label,caption"] + [f"class_{c}/img_{i}.png,{'xy'[c]},a picture"
                                          for c in (0, 1) for i in range(3)]
    _write(root / "metadata.csv", rows)
    with caplog.at_level(logging.INFO, logger="snugtune.data"):
        scan = scan_folder(root)
    assert scan.classes == ("x", "y")  # the rows' labels, not the folder names
    assert scan.labels_file == str(root / "metadata.csv") and scan.skipped == ()
    assert any("found in the data folder (Hugging Face imagefolder" in r.getMessage()
               for r in caplog.records)


def test_metadata_jsonl_and_its_choices(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "data", classes=2, per_class=2, size=16)
    meta = [json.dumps({"file_name": f"class_{c}/img_{i}.png", "label": f"L{c}"})
            for c in (0, 1) for i in range(2)]
    _write(root / "metadata.jsonl", meta)
    assert scan_folder(root).classes == ("L0", "L1")
    assert find_labels_file(root, LabelsSpec()) == (root / "metadata.jsonl", True)
    _write(root / "metadata.csv", ["file_name,label"])
    with pytest.raises(DataError, match=r"both metadata.csv and metadata.jsonl.*--labels"):
        scan_folder(root)
    other = _write(tmp_path / "other.jsonl", meta[:1] + [json.dumps(
        {"file_name": f"class_{c}/img_{i}.png", "label": "L1"}) for c, i in ((0, 1), (1, 0))])
    named = scan_folder(root, labels=LabelsSpec(str(other)))  # the flag wins
    assert named.class_counts() == {"L0": 1, "L1": 2} and named.labels_file == str(other)


def test_metadata_without_labels_leaves_them_to_the_class_folders(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "data", classes=2, per_class=2, size=16)
    _write(root / "metadata.csv", ["file_name,caption", "class_0/img_0.png,a picture"])
    scan = scan_folder(root)
    assert scan.classes == ("class_0", "class_1") and scan.labels_file is None
    with pytest.raises(DataError, match=r"no label column 'label'.*--label-column NAME"):
        scan_folder(root, labels=LabelsSpec(str(root / "metadata.csv")))
    _write(root / "metadata.csv", ["id,notes", "x,y"])  # not imagefolder metadata at all
    assert scan_folder(root) == scan


def test_a_class_folder_tree_without_labels_is_scanned_as_before(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "data", classes=2, per_class=2, size=16)
    scan = scan_folder(root)
    assert scan.classes == ("class_0", "class_1") and scan.labels_file is None
    assert scan.labels_sha256 == "" and scan.skipped == ()


# --- downstream: the data index, the doctor, the split ------------------------------------------


def test_a_changed_labels_file_is_read_again_while_the_checks_come_from_the_index(
        flat: Path, tmp_path: Path) -> None:
    spec = LabelsSpec(str(_kaggle(tmp_path)), path_column="id")
    first = scan_folder(flat, labels=spec)
    text = (tmp_path / "train.csv").read_text().replace("c2,cat", "c2,dog")
    (tmp_path / "train.csv").write_text(text)
    second = scan_folder(flat, labels=spec)
    assert second.class_counts() == {"cat": 2, "dog": 4}
    assert second.labels_sha256 != first.labels_sha256
    by_name = {Path(s.path).name: s for s in first.samples}
    assert all(s.sha256 == by_name[Path(s.path).name].sha256 for s in second.samples)


def test_the_doctor_sees_copies_under_two_labels_as_conflicting(
        flat: Path, tmp_path: Path) -> None:
    shutil.copy(flat / "c0.png", flat / "copy_of_c0.png")
    labels = _kaggle(tmp_path, "copy_of_c0,dog")
    data = split_folder(scan_folder(flat, labels=LabelsSpec(str(labels), path_column="id")),
                        0.3, seed=0)
    groups = diagnose(data).of("conflicting labels")
    assert [sorted(Path(p).name for p, _, _ in g.files) for g in groups] == [
        ["c0.png", "copy_of_c0.png"]]


def test_the_split_of_a_flat_folder_is_stratified_and_keeps_copies_together(
        flat: Path, tmp_path: Path) -> None:
    for i in range(3):
        shutil.copy(flat / f"d{i}.png", flat / f"d{i}_copy.png")
    labels = _kaggle(tmp_path, "d0_copy,dog", "d1_copy,dog", "d2_copy,dog")
    scan = scan_folder(flat, labels=LabelsSpec(str(labels), path_column="id"))
    data = split_folder(scan, 0.34, seed=0)
    assert data.kept_together == 3
    val = {Path(s.path).stem.removesuffix("_copy") for s in data.val}
    train = {Path(s.path).stem.removesuffix("_copy") for s in data.train}
    assert not val & train and {s.label for s in data.val} == {0, 1}
