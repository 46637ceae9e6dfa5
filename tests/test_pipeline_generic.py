"""Tests of `pipelines.generic`: tiny CSV / parquet / .npy fixtures written into tmp_path, and (slow) the real
Amazon 2014 Beauty sample from ../shared/data."""

import datetime
import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from mfn4rec_tf.dataset import load_dataset
from pipelines import generic
from pipelines.common import SECONDS_PER_YEAR, run_main

REPO = Path(__file__).resolve().parents[1]
BEAUTY = REPO.parent / "shared" / "data" / "amazon2014-beauty"

# Custom column names, an ignored extra column, integer / float / date-string times, one line of each skip reason.
INTERACTIONS_CSV = [
    "uid,iid,ts,rating",
    "u1,i10,1000,5",                    # 2
    "bad,row",                          # 3 malformed_line
    "u1,i2,2014-01-01T00:00:00Z,3",     # 4 -> 1388534400
    "u2,i10,2014-01-01,4",              # 5 -> 1388534400 (no zone: UTC)
    "u2,i3,not a date,2",               # 6 bad_timestamp
    "u2,i2,500,1",                      # 7
    "u3,i3,1999-12-31 23:00:00-01:00,5",  # 8 -> 946684800 (2000-01-01 00:00 UTC)
    "u3,i2,1000.7,4",                   # 9 -> 1000 (rounded down)
    ",i3,100,1",                        # 10 missing_user_or_item
    "u1,i10,1000,5",                    # 11 duplicate of line 2
    "",                                 # 12 empty_line
    "u4,i2,01/02/2014,3",               # 13 -> 1388620800 (month first)
]
EXPECTED_SEQUENCES = {"u1": ["i10", "i2"], "u2": ["i2", "i10"], "u3": ["i2", "i3"], "u4": ["i2"]}
EXPECTED_TIMES = {"u1": [1000, 1388534400], "u2": [500, 1388534400], "u3": [1000, 946684800], "u4": [1388620800]}
ITEMS_CSV = [
    "iid,title,brand,price",
    'i10,"Red Lipstick, matte",Acme,9.5',
    "i2,Gloss gloss,,3.25",
    "i99,Not in the catalogue,Acme,1.0",  # metadata_not_in_catalogue; i3 has no row: items_without_metadata
]


def write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def interactions_csv(tmp_path):
    return write(tmp_path / "interactions.csv", INTERACTIONS_CSV)


@pytest.fixture
def items_csv(tmp_path):
    return write(tmp_path / "items.csv", ITEMS_CSV)


def run(argv, capsys):
    """Runs the CLI like `python -m pipelines.generic`; returns (exit status, stdout, stderr)."""
    status = run_main(generic.main, [str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def main(*argv):
    return load_dataset(generic.main([str(a) for a in argv]), verify_features=True)


def sequences(dataset):
    """user -> [item_id, ...] in the stored (time) order, and user -> timestamps."""
    ids = dataset.item_ids()
    groups = dataset.interactions.groupby("user_id", sort=True)
    return ({u: [ids[i] for i in g["item_index"]] for u, g in groups},
            {u: g["timestamp"].tolist() for u, g in groups})


CSV_ARGS = ("--user-col", "uid", "--item-col", "iid", "--time-col", "ts")


def test_csv_interactions_and_items(interactions_csv, items_csv, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="pipelines"):
        dataset = main("--interactions", interactions_csv, *CSV_ARGS, "--items", items_csv, "--out", tmp_path / "ds")
    assert dataset.manifest["counts"] == {"users": 4, "items": 3, "interactions": 7}
    assert dataset.manifest["skipped"] == {
        "bad_timestamp": 1, "duplicate_events": 1, "empty_line": 1, "items_without_metadata": 1,
        "malformed_line": 1, "metadata_not_in_catalogue": 1, "missing_user_or_item": 1,
    }
    assert dataset.items["item_index"].tolist() == [1, 2, 3]
    assert dataset.items["item_id"].tolist() == ["i10", "i2", "i3"]  # sorted as strings
    # Default text fields: the string columns but the id (price is a number).
    assert list(dataset.items.columns) == ["item_index", "item_id", "title", "brand"]
    assert dataset.items["title"].tolist()[:2] == ["Red Lipstick, matte", "Gloss gloss"]
    assert pd.isna(dataset.items["title"][2])  # i3 has no metadata
    assert dataset.items["brand"][0] == "Acme" and pd.isna(dataset.items["brand"][1])  # blank -> missing
    assert dataset.manifest["sources"][1]["text_fields"] == ["title", "brand"]
    seqs, times = sequences(dataset)
    assert seqs == EXPECTED_SEQUENCES
    assert times == EXPECTED_TIMES
    logged = " ".join(r.getMessage() for r in caplog.records)
    for line, reason in [(3, "malformed_line"), (6, "bad_timestamp"), (12, "empty_line")]:
        assert f"({reason}) at {interactions_csv}:{line}" in logged


def test_parquet_interactions_with_typed_columns(tmp_path):
    frame = pd.DataFrame({
        "user_id": [7, 7, 8, 8, 8],
        "item_id": [10, 2, 3, 10, 2],
        "timestamp": pd.to_datetime(["2020-01-02", "2020-01-01", "2020-01-03", None, "2019-12-31 12:00"],
                                    format="ISO8601"),
    })
    frame.to_parquet(tmp_path / "log.parquet")
    dataset = main("--interactions", tmp_path / "log.parquet", "--out", tmp_path / "ds")
    assert dataset.manifest["counts"] == {"users": 2, "items": 3, "interactions": 4}
    assert dataset.manifest["skipped"] == {"bad_timestamp": 1}  # the missing time
    assert dataset.items["item_id"].tolist() == ["10", "2", "3"]  # integer ids as decimal strings
    seqs, times = sequences(dataset)
    assert seqs == {"7": ["2", "10"], "8": ["2", "3"]}
    assert times == {"7": [1577836800, 1577923200], "8": [1577793600, 1578009600]}


@pytest.mark.parametrize("name", ["log.csv.gz", "log.tsv", "log.TSV.bz2"])
def test_compressed_and_tab_separated_files(tmp_path, name):
    frame = pd.DataFrame({"user_id": ["a", "a", "b"], "item_id": ["x, y", "z", "z"], "timestamp": [3, 1, 2]})
    frame.to_csv(tmp_path / name, index=False, sep="\t" if ".tsv" in name.lower() else ",")
    seqs, times = sequences(main("--interactions", tmp_path / name, "--out", tmp_path / "ds"))
    assert seqs == {"a": ["z", "x, y"], "b": ["z"]} and times == {"a": [1, 3], "b": [2]}


def test_unknown_extension_is_one_error_line(tmp_path, capsys):
    path = write(tmp_path / "log.json", ["{}"])
    status, _, err = run(["--interactions", path, "--out", tmp_path / "ds"], capsys)
    assert status == 2 and "log.json" in _one_error_line(err) and ".parquet" in err


def test_parquet_items_with_their_own_id_column(interactions_csv, tmp_path):
    pd.DataFrame({"sku": ["i3", "i2", "i2"], "name": ["Blue pen", "Gloss", "repeated row"],
                  "stock": [1, 2, 3]}).to_parquet(tmp_path / "items.parquet")
    dataset = main("--interactions", interactions_csv, *CSV_ARGS, "--items", tmp_path / "items.parquet",
                   "--items-id-col", "sku", "--text-fields", "name,stock", "--out", tmp_path / "ds")
    assert dataset.items["name"].tolist()[1:] == ["Gloss", "Blue pen"]
    assert dataset.items["stock"].tolist()[1:] == ["2", "1"]  # a chosen non-string column is written out
    skipped = dataset.manifest["skipped"]
    assert skipped["duplicate_item_metadata"] == 1 and skipped["items_without_metadata"] == 1


def test_npy_and_parquet_vectors(interactions_csv, tmp_path):
    # .npy rows: i3, an unknown id, i10, i2 (NaN).
    matrix = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9], [np.nan, 0, 0]], np.float32)
    np.save(tmp_path / "clip.npy", matrix)
    write(tmp_path / "clip_ids.txt", ["i3", "i99", "i10", "i2"])
    # parquet rows: i10, an unknown id, i3 (NaN inside), i2 (null vector).
    pd.DataFrame({"item_id": ["i10", "i77", "i3", "i2"],
                  "emb": [[0.5, -1.0], [3.0, 4.0], [np.nan, 1.0], None]}).to_parquet(tmp_path / "emb.parquet")
    dataset = main("--interactions", interactions_csv, *CSV_ARGS,
                   "--vectors", f"clip={tmp_path / 'clip.npy'}:{tmp_path / 'clip_ids.txt'}",
                   "--vectors", f"emb={tmp_path / 'emb.parquet'}", "--vector-col", "emb", "--out", tmp_path / "ds")
    assert dataset.modality_names == ("clip", "emb")
    # Catalogue: 1 = i10, 2 = i2, 3 = i3.
    clip = np.asarray(dataset.features("clip"))
    np.testing.assert_array_equal(clip, [[0, 0, 0], [7, 8, 9], [0, 0, 0], [1, 2, 3]])
    assert dataset.presence("clip").tolist() == [False, True, False, True]
    emb = np.asarray(dataset.features("emb"))
    np.testing.assert_array_equal(emb, [[0, 0], [0.5, -1.0], [0, 0], [0, 0]])
    assert dataset.presence("emb").tolist() == [False, True, False, False]
    assert dataset.manifest["modalities"]["clip"]["items_with"] == 2
    assert dataset.manifest["modalities"]["emb"]["items_with"] == 1
    skipped = dataset.manifest["skipped"]
    assert {k: v for k, v in skipped.items() if k.startswith(("clip", "emb"))} == {
        "clip_non_finite": 1, "clip_not_in_catalogue": 1,
        "emb_missing": 1, "emb_non_finite": 1, "emb_not_in_catalogue": 1, "emb_null_vectors": 1,
    }


@pytest.mark.parametrize("array, seconds, ok", [
    (pa.array([1, None, 3]), [1, 0, 3], [True, False, True]),
    (pa.array([1.9, float("nan"), -0.5]), [1, 0, -1], [True, False, True]),
    (pa.array([datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=2))), None]),
     [1577829600, 0], [True, False]),
    (pa.array([datetime.date(1970, 1, 2)]), [86400], [True]),
    (pa.array(["42", " 7 ", "1e3", "2020-01-01T00:00:00+01:00", "Jan 5, 2014", "nope", None, ""]),
     [42, 7, 1000, 1577833200, 1388880000, 0, 0, 0], [True] * 5 + [False] * 3),
])
def test_to_seconds(array, seconds, ok):
    values, good = generic.to_seconds(array)
    assert values.tolist() == seconds and good.tolist() == ok


def test_to_seconds_rejects_other_types():
    with pytest.raises(ValueError, match="bool"):
        generic.to_seconds(pa.array([True]))


@pytest.mark.parametrize("array, ids", [
    (pa.array([1.0, None, 3.0]), ["1", None, "3"]),
    (pa.array([1.5, 2.0]), ["1.5", "2"]),
    (pa.array([" a ", "b"]), ["a", "b"]),
    (pa.array(["x", "y", "x"]).dictionary_encode(), ["x", "y", "x"]),
    (pa.array([12, 7], pa.int16()), ["12", "7"]),
    (pa.array([1.0, float("nan"), 3.0]), ["1", None, "3"]),  # NaN is missing, not -9223372036854775808
])
def test_id_strings(array, ids):
    assert generic.id_strings(array).tolist() == ids


def test_many_bad_rows_are_all_counted(tmp_path):
    lines = ["user_id,item_id,timestamp"] + [f"u{k},i1,someday" for k in range(8)] + ["u1,i1,5", "u2,i1,6"]
    dataset = main("--interactions", write(tmp_path / "log.csv", lines), "--out", tmp_path / "ds")
    assert dataset.manifest["skipped"] == {"bad_timestamp": 8}
    assert dataset.manifest["counts"]["interactions"] == 2


def test_paper_filters_on_a_hand_worked_log(tmp_path):
    """last 2 years, then items >= 5, then users 5..100 — each step's removals worked out by hand."""
    t1, old = 1_500_000_000, 1_500_000_000 - int(3 * SECONDS_PER_YEAR)
    rows = []
    rows += [("u1", item, t1 - 100 + k) for k, item in enumerate("ABCDEF")]        # 6 -> 5 without F
    rows += [("u2", item, t1 - 200 + k) for k, item in enumerate("ABCDE")]         # 5
    rows += [("u3", item, t1 - 300 + k) for k, item in enumerate("ABCD")]          # 4 in the window...
    rows += [("u3", "E", old), ("u3", "F", old - 10)]                               # ...and 2 older than 2 years
    rows += [("u4", "ABCDE"[k % 5], t1 - 10_000 + k) for k in range(101)]           # 101: too many
    rows += [("u5", item, t1 - k) for k, item in enumerate("ABCDEF")]              # 6 -> 5 without F
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).to_csv(tmp_path / "log.csv", index=False)
    dataset = main("--interactions", tmp_path / "log.csv", "--paper-filters", "--out", tmp_path / "ds")
    assert [{k: v for k, v in step.items() if k != "from_timestamp"} for step in dataset.manifest["filters"]] == [
        {"filter": "last_years", "years": 2.0, "interactions_removed": 2, "users_removed": 0, "items_removed": 0},
        {"filter": "min_item", "min": 5, "interactions_removed": 2, "users_removed": 0, "items_removed": 1},
        {"filter": "user_length", "min": 5, "max": 100, "interactions_removed": 105, "users_removed": 2,
         "items_removed": 0},
    ]
    assert dataset.manifest["counts"] == {"users": 3, "items": 5, "interactions": 15}
    seqs, _ = sequences(dataset)
    assert seqs == {"u1": list("ABCDE"), "u2": list("ABCDE"), "u5": list("EDCBA")}


def test_glove_text_modality(interactions_csv, items_csv, tmp_path):
    if not (REPO / "pipelines" / "text_features.py").exists():
        pytest.skip("pipelines/text_features.py is not written yet")
    glove = write(tmp_path / "glove.txt", ["red 1 0 0", "lipstick 0 1 0", "gloss 0 0 2", "blue 5 5 5"])
    dataset = main("--interactions", interactions_csv, *CSV_ARGS, "--items", items_csv, "--text-fields", "title",
                   "--glove", glove, "--out", tmp_path / "ds")
    assert dataset.manifest["modalities"]["text"]["items_with"] == 2
    assert dataset.presence("text").tolist() == [False, True, True, False]  # i3 has no text
    text = np.asarray(dataset.features("text"))
    np.testing.assert_allclose(text[1], [0.5, 0.5, 0])  # "red", "lipstick": once each, equal idf
    np.testing.assert_allclose(text[2], [0, 0, 2])      # "gloss" only
    np.testing.assert_array_equal(text[3], 0)


def _one_error_line(err):
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err
    return lines[0]


def test_missing_file_is_one_error_line(tmp_path, capsys):
    status, _, err = run(["--interactions", tmp_path / "nope.csv", "--out", tmp_path / "ds"], capsys)
    assert status == 2 and "nope.csv" in _one_error_line(err)


def test_missing_column_names_file_column_and_found_columns(interactions_csv, tmp_path, capsys):
    status, _, err = run(["--interactions", interactions_csv, "--user-col", "uid", "--item-col", "iid",
                          "--out", tmp_path / "ds"], capsys)
    line = _one_error_line(err)
    assert status == 2
    assert str(interactions_csv) in line and "'timestamp'" in line and "['uid', 'iid', 'ts', 'rating']" in line


def test_missing_vector_column_is_one_error_line(interactions_csv, tmp_path, capsys):
    pd.DataFrame({"item_id": ["i2"], "values": [[1.0]]}).to_parquet(tmp_path / "v.parquet")
    status, _, err = run(["--interactions", interactions_csv, *CSV_ARGS, "--vectors", f"v={tmp_path / 'v.parquet'}",
                          "--out", tmp_path / "ds"], capsys)
    line = _one_error_line(err)
    assert status == 2 and "v.parquet" in line and "'vector'" in line and "values" in line


def test_npy_ids_must_match_rows(interactions_csv, tmp_path, capsys):
    np.save(tmp_path / "v.npy", np.ones((3, 2), np.float32))
    write(tmp_path / "ids.txt", ["i2", "i3"])
    status, _, err = run(["--interactions", interactions_csv, *CSV_ARGS,
                          "--vectors", f"v={tmp_path / 'v.npy'}:{tmp_path / 'ids.txt'}", "--out", tmp_path / "ds"],
                         capsys)
    line = _one_error_line(err)
    assert status == 2 and "ids.txt lists 2 item ids" in line and "3 rows" in line


def test_unreadable_npy_names_the_file(interactions_csv, tmp_path, capsys):
    (tmp_path / "v.npy").write_text("not a numpy file")
    write(tmp_path / "ids.txt", ["i2"])
    status, _, err = run(["--interactions", interactions_csv, *CSV_ARGS,
                          "--vectors", f"v={tmp_path / 'v.npy'}:{tmp_path / 'ids.txt'}", "--out", tmp_path / "ds"],
                         capsys)
    assert status == 2 and f"{tmp_path / 'v.npy'} cannot be read" in _one_error_line(err)


def test_empty_after_filtering_is_one_error_line(interactions_csv, tmp_path, capsys):
    status, _, err = run(["--interactions", interactions_csv, *CSV_ARGS, "--min-user", "50",
                          "--out", tmp_path / "ds"], capsys)
    assert status == 2 and "no interactions left" in _one_error_line(err)
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("spec", ["novalue", "Bad-Name=x.parquet", "v=x.npy", "v=x.txt"])
def test_bad_vectors_argument_is_a_usage_error(spec, capsys):
    with pytest.raises(SystemExit) as exit_info:
        generic.build_parser().parse_args(["--interactions", "x.csv", "--out", "o", "--vectors", spec])
    assert exit_info.value.code == 2 and "--vectors" in capsys.readouterr().err


def test_help_runs_as_a_module():
    result = subprocess.run([sys.executable, "-m", "pipelines.generic", "--help"], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for option in ("--interactions", "--time-col", "--vectors", "--paper-filters", "--glove", "--images",
                   "--max-line-bytes"):
        assert option in result.stdout



# --------------------------------------------------------------- missing ids, header, long lines (row 10)

def test_missing_value_ids_are_counted_skips_with_their_line(tmp_path, capsys, caplog):
    """"NaN", "nan", "NULL", "None", "N/A", empty and blank ids are missing values, not a user or item."""
    log_csv = write(tmp_path / "log.csv", [
        "user_id,item_id,timestamp",
        "u1,i1,1",        # 2
        "NaN,i2,2",       # 3
        "u1,nan,3",       # 4
        'u2,"",4',        # 5
        "NULL,i3,5",      # 6
        "  ,i3,6",        # 7
        "None,i3,7",      # 8
        "u2,N/A,8",       # 9
        "u2,i1,9",        # 10
        "Nancy,i2,10",    # 11: a real id
    ])
    caplog.set_level(logging.WARNING, logger="pipelines")
    status, out, _ = run(["--interactions", log_csv, "--out", tmp_path / "ds"], capsys)
    assert status == 0
    dataset = load_dataset(tmp_path / "ds")
    assert dataset.manifest["skipped"] == {"missing_user_or_item": 7}
    assert "  skipped missing_user_or_item: 7" in out
    assert sorted(dataset.interactions["user_id"].unique()) == ["Nancy", "u1", "u2"]
    assert dataset.items["item_id"].tolist() == ["i1", "i2"]
    logged = " ".join(r.getMessage() for r in caplog.records)
    for line in (3, 4, 5, 6, 7):  # the first five are logged with their line
        assert f"(missing_user_or_item) at {log_csv}:{line}:" in logged
    assert "user_id='NaN'" in logged


def test_missing_value_ids_in_parquet_are_counted_skips(tmp_path):
    import pyarrow.parquet as pq

    pq.write_table(pa.table({  # a float NaN id (not a null), a "NaN" string id, a null id
        "user_id": pa.array([1.0, float("nan"), 2.0, None, 2.0]),
        "item_id": ["i1", "i1", "NaN", "i2", "i2"],
        "timestamp": [1, 2, 3, 4, 5],
    }), tmp_path / "log.parquet")
    dataset = main("--interactions", tmp_path / "log.parquet", "--out", tmp_path / "ds")
    assert dataset.manifest["skipped"] == {"missing_user_or_item": 3}
    assert sorted(dataset.interactions["user_id"].unique()) == ["1", "2"]
    assert dataset.items["item_id"].tolist() == ["i1", "i2"]


@pytest.mark.parametrize("role, header, message", [
    ("interactions", "user_id,item_id,user_id,timestamp", "'user_id'"),
    ("items", "item_id,title,title", "'title'"),
])
def test_duplicated_header_column_is_one_error_line(interactions_csv, tmp_path, capsys, role, header, message):
    path = write(tmp_path / f"{role}.csv", [header, "u1,i1,x,1" if role == "interactions" else "i2,a,b"])
    argv = (["--interactions", path] if role == "interactions"
            else ["--interactions", interactions_csv, *CSV_ARGS, "--items-id-col", "item_id", "--items", path])
    status, _, err = run([*argv, "--out", tmp_path / "ds"], capsys)
    line = _one_error_line(err)
    assert status == 2 and str(path) in line and message in line and "2 times" in line
    assert not (tmp_path / "ds").exists()


def test_duplicated_header_column_in_parquet_is_one_error_line(tmp_path, capsys):
    import pyarrow.parquet as pq
    pq.write_table(pa.table([["u1"], ["i1"], ["u9"], [1]], names=["user_id", "item_id", "user_id", "timestamp"]),
                   tmp_path / "log.parquet")
    status, _, err = run(["--interactions", tmp_path / "log.parquet", "--out", tmp_path / "ds"], capsys)
    line = _one_error_line(err)
    assert status == 2 and "log.parquet" in line and "'user_id'" in line and "2 times" in line


def test_duplicated_unused_column_is_fine(tmp_path):
    path = write(tmp_path / "log.csv", ["user_id,note,item_id,note,timestamp", "u1,a,i1,b,1", "u1,c,i2,d,2"])
    assert main("--interactions", path, "--out", tmp_path / "ds").manifest["counts"]["interactions"] == 2


def _log_with_long_line(path, line_bytes):
    """A log whose line 2,002 (after about 30 KB of short lines) is `line_bytes` long; returns the path."""
    rows = [f"u{k % 7},i{k % 11},{k}," for k in range(2000)]
    long_row = "u1,i1,5," + "x" * (line_bytes - len("u1,i1,5,"))
    return write(path, ["user_id,item_id,timestamp,note", *rows, long_row, *rows])


def test_line_over_the_limit_names_the_line_and_the_flag(tmp_path, capsys):
    path = _log_with_long_line(tmp_path / "log.csv", 2_500_000)  # over the default 1 MiB (and twice it)
    status, _, err = run(["--interactions", path, "--out", tmp_path / "ds"], capsys)
    line = _one_error_line(err)
    assert status == 2 and f"{path}:2002" in line and "2,500,000 bytes" in line and "--max-line-bytes" in line
    # Raising the limit reads the file.
    dataset = main("--interactions", path, "--max-line-bytes", 3_000_000, "--out", tmp_path / "ds")
    assert dataset.manifest["counts"]["interactions"] == 2001  # the 2,000 repeated rows are duplicates


def test_max_line_bytes_applies_to_items_too(interactions_csv, tmp_path, capsys):
    items = write(tmp_path / "items.csv", ["iid,title", *[f"i{k},title {k}" for k in range(100, 400)],
                                           "i2," + "y" * 5_000, "i3,short"])
    argv = ["--interactions", interactions_csv, *CSV_ARGS, "--items", items]
    status, _, err = run([*argv, "--max-line-bytes", "2000", "--out", tmp_path / "ds"], capsys)
    line = _one_error_line(err)
    assert status == 2 and f"{items}:302" in line and "--max-line-bytes" in line
    assert main(*argv, "--max-line-bytes", "8000", "--out", tmp_path / "ds").items["title"].str.len().max() == 5_000


@pytest.mark.parametrize("value", ["0", "-5", "lots"])
def test_max_line_bytes_must_be_a_positive_integer(value, capsys):
    base = ["--interactions", "x.csv", "--out", "o"]
    assert generic.build_parser().parse_args(base).max_line_bytes == 1 << 20
    assert generic.build_parser().parse_args([*base, "--max-line-bytes", "4096"]).max_line_bytes == 4096
    with pytest.raises(SystemExit) as exit_info:
        generic.build_parser().parse_args(["--interactions", "x.csv", "--out", "o", "--max-line-bytes", value])
    assert exit_info.value.code == 2 and "--max-line-bytes" in capsys.readouterr().err

@pytest.mark.slow
def test_real_amazon_beauty_sample(tmp_path, capsys):
    """The whole generic path on the real Amazon 2014 Beauty 5-core sample (ids + titles), no filters."""
    if not (BEAUTY / "interactions.csv").is_file() or not (BEAUTY / "items.csv").is_file():
        pytest.skip(f"real data not found at {BEAUTY}")
    if not (REPO / "pipelines" / "text_features.py").exists():
        pytest.skip("pipelines/text_features.py is not written yet")
    from pipelines.text_features import tokenize

    words = ["hair", "oil", "cream", "skin", "nail", "polish", "color", "natural", "eye", "lip", "face", "spray",
             "shampoo", "conditioner", "brush", "body", "gel", "set", "women", "men", "black", "white", "red",
             "pink", "mask", "lotion", "serum", "powder", "care", "dry", "oz", "ounce", "pack", "liner"]
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(words), 8)).round(4)
    glove = write(tmp_path / "glove.txt", [" ".join([w, *map(str, v)]) for w, v in zip(words, vectors)])

    start = time.perf_counter()
    path = generic.main(["--interactions", str(BEAUTY / "interactions.csv"), "--items", str(BEAUTY / "items.csv"),
                         "--glove", str(glove), "--dim", "8", "--out", str(tmp_path / "beauty")])
    seconds = time.perf_counter() - start
    dataset = load_dataset(path, verify_features=True)
    assert dataset.manifest["counts"] == {"users": 22332, "items": 12086, "interactions": 198215}
    assert dataset.manifest["skipped"] == {}

    present = dataset.presence("text")
    tokens = tokenize(dataset.items["title"].tolist())  # the pipeline's own tokenization, item-index order
    vocabulary = set(words)
    expected = np.array([False] + [bool(vocabulary.intersection(t)) for t in tokens])
    assert 0 < present.sum() <= 12086
    np.testing.assert_array_equal(present, expected)
    assert dataset.manifest["modalities"]["text"]["items_with"] == int(present.sum())
    # Items whose only known word is w (any number of times) have exactly w's vector: right row, right item.
    features = np.asarray(dataset.features("text"))
    single = [(row, (vocabulary.intersection(t)).pop()) for row, t in enumerate(tokens, start=1)
              if len(vocabulary.intersection(t)) == 1]
    assert len(single) > 100
    for row, word in single:
        np.testing.assert_allclose(features[row], vectors[words.index(word)], atol=1e-6)
    with capsys.disabled():
        print(f"\ngeneric pipeline on amazon2014-beauty (ids + text): {seconds:.1f} s")
