"""Tests of `pipelines.amazon`: tiny 2014 / 2018 / `.b` fixtures written into tmp_path."""

import doctest
import gzip
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mfn4rec_tf.dataset import load_dataset
from pipelines import amazon
from pipelines.common import SECONDS_PER_YEAR, SkipCounter, run_main

REPO = Path(__file__).resolve().parents[1]
DAY = 86400
T0 = 1_300_000_000
PWNED_ASIN = '__import__("os").system("echo PWNED")'


def write_lines(path, lines, compress=None):
    """Writes str/bytes lines; gzip-compressed when the name ends in .gz (or `compress` says so)."""
    data = b"".join((line if isinstance(line, bytes) else line.encode("utf-8")) + b"\n" for line in lines)
    compress = path.name.endswith(".gz") if compress is None else compress
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def review_2014(user, asin, day):
    return json.dumps({"reviewerID": user, "asin": asin, "reviewerName": "x", "helpful": [0, 1],
                       "reviewText": "ok", "overall": 4.0, "summary": "ok", "unixReviewTime": T0 + day * DAY,
                       "reviewTime": "01 1, 2011"})


def review_2018(user, asin, day):
    return json.dumps({"overall": 5.0, "verified": True, "reviewTime": "01 1, 2018", "reviewerID": user,
                       "asin": asin, "style": {"Color:": " Black"}, "reviewText": "ok",
                       "unixReviewTime": T0 + day * DAY, "vote": "2"})


@pytest.fixture
def reviews_2014(tmp_path):
    """3 valid users, items B..1-B..4 first seen out of asin order, plus one line of each skip reason."""
    return write_lines(tmp_path / "reviews_Clothing_5.json.gz", [
        review_2014("U1", "B000000002", 3),
        review_2014("U1", "B000000001", 1),
        review_2014("U2", "B000000004", 4),
        "{not json",
        review_2014("U1", "B000000003", 2),
        json.dumps({"reviewerID": "U3", "unixReviewTime": T0}),  # no asin
        review_2014("U1", "B000000001", 1),  # duplicate event
        review_2014("U2", "B000000003", 5),
        json.dumps({"reviewerID": "U3", "asin": "B000000001", "unixReviewTime": "yesterday"}),
        b'{"reviewerID": "U\xff9", "asin": "B000000001", "unixReviewTime": 1300000000}',  # not UTF-8
        review_2014("U3", "B000000004", 2),
        review_2014("U3", "B000000001", 6),
    ])


REVIEW_SKIPS = {"reviews_malformed_line": 1, "reviews_missing_field": 1, "reviews_bad_timestamp": 1,
                "reviews_undecodable_line": 1, "duplicate_events": 1}


@pytest.fixture
def meta_2014(tmp_path):
    """Python-literal lines: titles with entities, one item without a title, garbage, code-looking lines."""
    marker = tmp_path / "evaluated"
    return write_lines(tmp_path / "meta_Clothing.json.gz", [
        repr({"asin": "B000000001", "title": "Men's Shirt &amp; Tie", "brand": "Acme", "price": 3.17,
              "categories": [["Clothing", "Men"], ["Clothing", "Shirts"]], "description": "Soft cotton shirt.",
              "related": {"also_bought": ["B000000003"]}, "salesRank": {"Clothing": 211836}}),
        repr({"asin": "B000000002", "categories": [["Clothing"]], "description": "Warm cotton socks"}),
        "this is garbage {",
        f"__import__('pathlib').Path({str(marker)!r}).touch()",
        repr({"asin": "B000000003", "title": "Blue Hat", "imUrl": "http://x/y.jpg"}),
        repr({"asin": PWNED_ASIN}),
        repr({"asin": "B000000099", "title": "Not sold here"}),
    ]), marker


META_SKIPS = {"metadata_malformed_line": 2, "metadata_not_in_catalogue": 2, "items_without_metadata": 1}


def b_record(asin, vector):
    return asin.encode("ascii") + np.asarray(vector, "<f4").tobytes()


@pytest.fixture
def image_file(tmp_path):
    """4 complete records (one NaN, one not in the catalogue) and a truncated fifth; B..4 has none."""
    rng = np.random.default_rng(3)
    vectors = {asin: rng.normal(size=amazon.IMAGE_FEATURE_DIM).astype("float32")
               for asin in ("B000000003", "B000000001", "B000000077", "B000000002")}
    vectors["B000000001"][17] = np.nan
    data = b"".join(b_record(asin, v) for asin, v in vectors.items()) + b"B000000004" + b"\0" * 100
    path = tmp_path / "image_features_Clothing.b"
    path.write_bytes(data)
    return path, vectors


def run(argv, capsys):
    path = amazon.main([str(a) for a in argv])
    return load_dataset(path, verify_features=True), capsys.readouterr().out


# ------------------------------------------------------------------------------------------ 2014 path


def test_2014_reviews_counts_index_order_and_skips(reviews_2014, tmp_path, capsys):
    dataset, out = run(["--reviews", reviews_2014, "--out", tmp_path / "ds"], capsys)
    assert dataset.manifest["counts"] == {"users": 3, "items": 4, "interactions": 7}
    assert dataset.manifest["skipped"] == REVIEW_SKIPS
    assert dataset.items["item_id"].tolist() == ["B000000001", "B000000002", "B000000003", "B000000004"]
    assert dataset.items["item_index"].tolist() == [1, 2, 3, 4]
    rows = [(u, i, (t - T0) // DAY) for u, i, t in dataset.interactions.itertuples(index=False)]
    assert rows == [("U1", 1, 1), ("U1", 3, 2), ("U1", 2, 3), ("U2", 4, 4), ("U2", 3, 5), ("U3", 4, 2), ("U3", 1, 6)]
    assert "  users 3  items 4  interactions 7" in out
    for reason, count in REVIEW_SKIPS.items():
        assert f"  skipped {reason}: {count}\n" in out + "\n"
    (source,) = dataset.manifest["sources"]
    assert source["role"] == "reviews" and source["release"] == "2014" and source["valid_lines"] == 8
    assert Path(source["path"]) == reviews_2014.resolve()
    assert dataset.modality_names == ()


def test_2014_metadata_text_columns_and_no_eval(reviews_2014, meta_2014, tmp_path, capfd):
    meta, marker = meta_2014
    path = amazon.main(["--reviews", str(reviews_2014), "--meta", str(meta), "--out", str(tmp_path / "ds")])
    out = capfd.readouterr().out
    dataset = load_dataset(path)
    assert not marker.exists() and "PWNED" not in out  # the lines were data, never code
    assert dataset.manifest["skipped"] == {**REVIEW_SKIPS, **META_SKIPS}
    items = dataset.items.set_index("item_id")
    assert items.loc["B000000001", "title"] == "Men's Shirt & Tie"
    assert items.loc["B000000001", "categories"] == "Clothing, Men, Shirts"
    assert items.loc["B000000001", "brand"] == "Acme"
    assert items.loc["B000000001", "description"] == "Soft cotton shirt."
    assert items["title"].isna().tolist() == [False, True, False, True]  # B..2 has no title, B..4 no metadata
    assert items.loc["B000000002", "description"] == "Warm cotton socks"
    sources = {s["role"]: s for s in dataset.manifest["sources"]}
    assert sources["metadata"]["release"] == sources["metadata"]["release_detected"] == "2014"
    assert sources["metadata"]["parsed_as"] == {"json": 0, "python_literal": 5}
    for reason, count in META_SKIPS.items():
        assert f"  skipped {reason}: {count}\n" in out


def test_metadata_line_is_parsed_as_data():
    record, parser = amazon.parse_metadata_line(repr({"asin": PWNED_ASIN}))
    assert record == {"asin": PWNED_ASIN} and parser == "python_literal"
    with pytest.raises(ValueError, match="not JSON or a Python literal"):
        amazon.parse_metadata_line("__import__('os').getcwd()")
    with pytest.raises(ValueError, match="not JSON"):
        amazon.parse_metadata_line("{'asin': 'B1'}", release="2018")
    with pytest.raises(ValueError, match="not a Python literal"):
        amazon.parse_metadata_line('{"asin": "B1", "x": true}', release="2014")


def test_forced_release_rejects_the_other_syntax(reviews_2014, meta_2014, tmp_path, capsys):
    meta, _ = meta_2014
    with pytest.raises(ValueError, match="no valid metadata line.*metadata_malformed_line 7"):
        amazon.main(["--reviews", str(reviews_2014), "--meta", str(meta), "--release", "2018",
                     "--out", str(tmp_path / "ds")])


# ------------------------------------------------------------------------------------------ 2018 path


def test_2018_reviews_and_html_metadata(tmp_path, capsys):
    reviews = write_lines(tmp_path / "Cell_Phones.json", [review_2018("A", "P2", 2), review_2018("A", "P1", 1),
                                                          review_2018("B", "P1", 3)])
    meta = write_lines(tmp_path / "meta_Cell_Phones.json.gz", [
        json.dumps({"asin": "P1", "title": '<span class="a-size-large">Phone &amp; Case</span>',
                    "description": ["<p>Fits <b>all</b> phones.</p>", "Second &quot;part&quot;", ""],
                    "category": ["Cell Phones", "Cases &amp; Covers", "Cell Phones"], "brand": "Acme",
                    "feature": ["x"], "imageURL": []}),
        json.dumps({"asin": "P2", "title": "Charger<script>var a = 1 < 2;</script><br/>USB-C", "brand": ""}),
    ])
    dataset, out = run(["--reviews", reviews, "--meta", meta, "--out", tmp_path / "ds"], capsys)
    items = dataset.items.set_index("item_id")
    assert items.loc["P1", "title"] == "Phone & Case"
    assert items.loc["P1", "description"] == 'Fits all phones. Second "part"'
    assert items.loc["P1", "categories"] == "Cell Phones, Cases & Covers"
    assert items.loc["P2", "title"] == "Charger USB-C"
    assert items["brand"].isna().tolist() == [False, True]
    sources = {s["role"]: s for s in dataset.manifest["sources"]}
    assert sources["reviews"]["release"] == "2018" and sources["metadata"]["release"] == "2018"
    assert sources["metadata"]["parsed_as"] == {"json": 2, "python_literal": 0}
    assert dataset.manifest["counts"] == {"users": 2, "items": 2, "interactions": 3}
    assert dataset.manifest["skipped"] == {}


def test_clean_text_examples():
    results = doctest.testmod(amazon, optionflags=doctest.ELLIPSIS)
    assert results.attempted >= 3 and results.failed == 0
    assert amazon.clean_text("size < 5 &lt;br&gt; ok") == "size < 5 ok"
    assert amazon.clean_text("   ") is None and amazon.clean_text({"a": 1}) is None
    assert amazon.clean_text(1984) == "1984"


# ---------------------------------------------------------------------------------------- image features


def test_image_features_rows_presence_and_truncation(reviews_2014, image_file, tmp_path, capsys, caplog):
    path, vectors = image_file
    with caplog.at_level(logging.WARNING, logger="pipelines"):
        dataset, out = run(["--reviews", reviews_2014, "--image-features", path, "--out", tmp_path / "ds"], capsys)
    image = np.asarray(dataset.features("image"))
    assert image.shape == (5, 4096) and image.dtype == np.float32
    np.testing.assert_array_equal(dataset.presence("image"), [False, False, True, True, False])
    np.testing.assert_array_equal(image[2], vectors["B000000002"])
    np.testing.assert_array_equal(image[3], vectors["B000000003"])
    assert not image[[0, 1, 4]].any()  # padding, the NaN item, the item whose record is truncated
    skipped = dataset.manifest["skipped"]
    assert {k: skipped[k] for k in skipped if k.startswith("image_")} == {
        "image_non_finite": 1, "image_missing": 1, "image_truncated_record": 1, "image_not_in_catalogue": 1}
    assert f"byte {4 * amazon.IMAGE_RECORD.itemsize:,}" in caplog.text and "110 of 16,394 bytes" in caplog.text
    assert "modality image: 4096-d, 2 of 4 items have it" in out
    source = dataset.manifest["sources"][-1]
    assert source["role"] == "image_features" and source["records"] == 4 and source["records_kept"] == 3


@pytest.mark.parametrize("chunk_records", [1, 2, 3, 1024])
def test_image_reader_streams_in_chunks(image_file, chunk_records):
    path, vectors = image_file
    skips = SkipCounter()
    ids, kept, info = amazon.read_image_features(path, ["B000000002", "B000000003", "B000000004"], skips,
                                                 chunk_records=chunk_records)
    assert ids == ["B000000003", "B000000002"] and info["records"] == 4
    np.testing.assert_array_equal(kept, np.stack([vectors["B000000003"], vectors["B000000002"]]))
    assert skips.as_dict() == {"image_not_in_catalogue": 2, "image_truncated_record": 1}


def test_image_reader_keeps_first_of_repeated_records(tmp_path):
    path = tmp_path / "x.b"
    path.write_bytes(b_record("B000000001", np.ones(4096)) + b_record("B000000001", np.zeros(4096)))
    skips = SkipCounter()
    ids, kept, _ = amazon.read_image_features(path, ["B000000001"], skips)
    assert ids == ["B000000001"] and kept.sum() == 4096 and skips.as_dict() == {"image_duplicate_ids": 1}


@pytest.mark.parametrize("data, message", [
    (b"", "no complete image-feature record"),
    (b"B000000001" + b"\0" * 400, "no complete image-feature record"),
    (b"\x1f\x8b\x08\x00" + b"\0" * 16390, "does not look like an image-features .b file"),
])
def test_image_reader_rejects_files_without_records(tmp_path, data, message):
    path = tmp_path / "bad.b"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=message):
        amazon.read_image_features(path, ["B000000001"], SkipCounter())


# ------------------------------------------------------------------------------------------- filters


def test_paper_filters_keep_the_hand_worked_survivors(tmp_path, capsys):
    """Recent days are 900..1000, old days 0..100 (> 2 years before the last day, 1000).

    Items P1-P5 are popular; R has 4 recent + 3 old interactions (7 in all, 4 in the last two years).
    - last_years removes U4's 2, U5's 2 and U9's 5 old interactions (U9 disappears): -9.
    - min_item then removes R (4 recent < 5): U2, U3, U7, U8 lose one each: -4.
    - user_length removes U3 (4 left), U5 (3), U7 (4) and U6 (101 > 100): -112.
    Survivors: U1, U2, U4, U8 with P1-P5 each: 20 interactions.
    """
    popular = [f"P{k}" for k in range(1, 6)]
    plan = {
        "U1": [(p, 900 + k) for k, p in enumerate(popular)],
        "U2": [(p, 900 + k) for k, p in enumerate(popular + ["R"])],
        "U3": [(p, 900 + k) for k, p in enumerate(popular[:4] + ["R"])],
        "U4": [(p, 900 + k) for k, p in enumerate(popular)] + [("P1", 10), ("P2", 20)],
        "U5": [(p, 900 + k) for k, p in enumerate(popular[:3])] + [("P4", 30), ("P5", 40)],
        "U6": [(popular[k % 5], 1000 - k * 0.5) for k in range(101)],
        "U7": [(p, 900 + k) for k, p in enumerate(["R"] + popular[:4])],
        "U8": [(p, 900 + k) for k, p in enumerate(["R"] + popular)],
        "U9": [("R", 1), ("R", 2), ("R", 3), ("P1", 4), ("P2", 5)],
    }
    lines = [json.dumps({"reviewerID": user, "asin": asin, "unixReviewTime": int(T0 + day * DAY)})
             for user, events in plan.items() for asin, day in events]
    assert len(lines) == 145
    reviews = write_lines(tmp_path / "Toys.json.gz", lines)
    dataset, out = run(["--reviews", reviews, "--paper-filters", "--out", tmp_path / "ds"], capsys)
    assert dataset.manifest["counts"] == {"users": 4, "items": 5, "interactions": 20}
    assert sorted(dataset.interactions["user_id"].unique()) == ["U1", "U2", "U4", "U8"]
    assert dataset.items["item_id"].tolist() == popular
    removed = [(f["filter"], f["interactions_removed"], f["users_removed"], f["items_removed"])
               for f in dataset.manifest["filters"]]
    assert removed == [("last_years", 9, 1, 0), ("min_item", 4, 0, 1), ("user_length", 112, 4, 0)]
    assert dataset.manifest["filters"][0]["from_timestamp"] == int(np.ceil(T0 + 1000 * DAY - 2 * SECONDS_PER_YEAR))
    assert "  filter user_length: -112 interactions, -4 users, -0 items" in out


# -------------------------------------------------------------------------------------------- errors


def error_lines(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("error:")]


def test_missing_file_is_a_one_line_error(tmp_path, capsys):
    missing = tmp_path / "reviews_None.json.gz"
    assert run_main(amazon.main, ["--reviews", str(missing), "--out", str(tmp_path / "ds")]) == 2
    assert error_lines(capsys) == [f"error: --reviews {missing} does not exist (or is not a file)."]
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("lines, detail", [
    ([], "the file has no lines"),
    (["{oops", "[1, 2]", '{"asin": "B1"}', ""],
     "skipped: reviews_blank_line 1, reviews_malformed_line 2, reviews_missing_field 1"),
])
def test_file_without_valid_lines_is_a_one_line_error(tmp_path, capsys, lines, detail):
    reviews = write_lines(tmp_path / "reviews_Empty.json.gz", lines) if lines else tmp_path / "reviews_Empty.json"
    if not lines:
        reviews.write_bytes(b"")
    assert run_main(amazon.main, ["--reviews", str(reviews), "--out", str(tmp_path / "ds")]) == 2
    assert error_lines(capsys) == [f"error: {reviews} has no valid review line ({detail})."]


def test_truncated_gzip_is_a_one_line_error(reviews_2014, tmp_path, capsys):
    cut = tmp_path / "reviews_Cut.json.gz"
    cut.write_bytes(reviews_2014.read_bytes()[:-20])
    assert run_main(amazon.main, ["--reviews", str(cut), "--out", str(tmp_path / "ds")]) == 2
    (line,) = error_lines(capsys)
    assert line.startswith(f"error: {cut} is damaged or incomplete after line ")


def test_existing_out_needs_overwrite(reviews_2014, tmp_path, capsys):
    out = tmp_path / "ds"
    out.mkdir()
    assert run_main(amazon.main, ["--reviews", str(reviews_2014), "--out", str(out)]) == 2
    assert error_lines(capsys) == [f"error: --out {out} already exists; pass --overwrite to replace it."]
    assert run_main(amazon.main, ["--reviews", str(reviews_2014), "--out", str(out), "--overwrite"]) == 0
    assert load_dataset(out).manifest["counts"]["interactions"] == 7


@pytest.mark.parametrize("extra, message", [
    (["--images", "imgs", "--image-features", "x.b"], "--images and --image-features"),
    (["--glove", "g.txt"], "--glove needs --meta"),
    (["--text-fields", "title,price"], "choose a comma-separated list"),
])
def test_conflicting_arguments_exit_with_usage(tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_info:
        amazon.main(["--reviews", "r.json", "--out", str(tmp_path / "ds"), *extra])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: python -m pipelines.amazon" in err and message in err


def test_progress_is_logged_while_reading(tmp_path, caplog):
    path = write_lines(tmp_path / "r.json.gz", [review_2014("U1", f"B{k:09d}", k) for k in range(5)])
    with caplog.at_level(logging.INFO, logger="pipelines.amazon"):
        events, _ = amazon.read_reviews(path, SkipCounter(), progress_every=2)
    assert len(events) == 5
    progress = [r.getMessage() for r in caplog.records if "% of the file" in r.getMessage()]
    assert [m.split(":")[1].split("lines")[0].strip() for m in progress] == ["2", "4"]


# --------------------------------------------------------------------------------------------- text


@pytest.mark.parametrize("fields, have", [("title", 2), ("title,description", 3)])
def test_glove_gives_a_text_modality(reviews_2014, meta_2014, tmp_path, capsys, fields, have):
    if not (REPO / "pipelines" / "text_features.py").exists():
        pytest.skip("pipelines/text_features.py (text_modality's backend) is not written yet")
    meta, _ = meta_2014
    glove = tmp_path / "glove.4d.txt"
    glove.write_text("shirt 1 0 0 0\nhat 0 1 0 0\ncotton 0 0 1 0\nblue 0 0 0 1\n")
    dataset, out = run(["--reviews", reviews_2014, "--meta", meta, "--glove", glove, "--dim", "4",
                        "--text-fields", fields, "--out", tmp_path / "ds"], capsys)
    # B..1 "Men's Shirt & Tie" / "Soft cotton shirt."; B..2 no title / "Warm cotton socks";
    # B..3 "Blue Hat"; B..4 no metadata.
    text = np.asarray(dataset.features("text"))
    assert text.shape == (5, 4)
    assert dataset.modality("text").items_with == have
    expected = [False, True, fields != "title", True, False]
    np.testing.assert_array_equal(dataset.presence("text"), expected)
    assert not text[~np.asarray(expected)].any()
    assert f"modality text: 4-d, {have} of 4 items have it" in out
    source = dataset.manifest["sources"][-1]
    assert source["role"] == "word_vectors" and source["text_fields"] == fields.split(",")


def test_module_runs_as_a_command():
    result = subprocess.run([sys.executable, "-m", "pipelines.amazon", "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m pipelines.amazon")
    for option in ("--reviews", "--meta", "--release", "--text-fields", "--image-features", "--paper-filters",
                   "--glove", "--out", "default: title"):
        assert option in result.stdout


def test_metadata_without_catalogue_items_still_gives_text_columns(reviews_2014, tmp_path, capsys):
    meta = write_lines(tmp_path / "meta_Other.json", [json.dumps({"asin": "B000000099", "title": "Elsewhere"})])
    dataset, out = run(["--reviews", reviews_2014, "--meta", meta, "--out", tmp_path / "ds"], capsys)
    assert set(amazon.TEXT_COLUMNS) <= set(dataset.items.columns)
    assert dataset.items["title"].isna().all()
    assert dataset.manifest["skipped"]["items_without_metadata"] == 4
    assert dataset.manifest["skipped"]["metadata_not_in_catalogue"] == 1


def test_out_of_range_timestamps_are_counted_not_fatal(tmp_path):
    import gzip as _gzip
    import json as _json

    from pipelines import amazon as _amazon
    from pipelines.common import run_main as _run_main

    reviews = tmp_path / "reviews.json.gz"
    rows = [{"reviewerID": "u1", "asin": "a", "unixReviewTime": 10},
            {"reviewerID": "u1", "asin": "b", "unixReviewTime": 99999999999999999999},
            {"reviewerID": "u1", "asin": "c", "unixReviewTime": -5},
            {"reviewerID": "u1", "asin": "d", "unixReviewTime": 1e300},
            {"reviewerID": "u1", "asin": "e", "unixReviewTime": 20}]
    with _gzip.open(reviews, "wt") as handle:
        handle.write("".join(_json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "ds"
    assert _run_main(_amazon.main, ["--reviews", str(reviews), "--out", str(out)]) == 0
    manifest = _json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["interactions"] == 2
    assert manifest["skipped"]["reviews_bad_timestamp"] == 3


# ------------------------------------------------------------------------ hostile single lines (row 9)

DEEP_JSON = "[" * 100_000 + "]" * 100_000
HUGE_NUMBER = "1" * 5_000  # over Python's 4,300-digit int/str conversion limit


def skip_places(caplog):
    """reason -> the places (file:line) logged for it."""
    places = {}
    for record in caplog.records:
        if record.getMessage().startswith("skipped ("):
            reason, _, rest = record.getMessage()[len("skipped ("):].partition(") at ")
            places.setdefault(reason, []).append(rest.split(": ", 1)[0])
    return places


def test_one_hostile_review_line_is_a_counted_skip_with_its_line(tmp_path, caplog):
    """A 100,000-deep bracket line, a lone surrogate in an id, a 5,000-digit time (number or string) and a
    superscript-digit time each skip their own line (with file:line); the good lines still make the dataset."""
    reviews = write_lines(tmp_path / "reviews_Hostile.json", [
        review_2014("U1", "B000000001", 1),                                                     # 1
        DEEP_JSON,                                                                              # 2
        '{"reviewerID": "U\\ud800", "asin": "B000000002", "unixReviewTime": 1300000000}',      # 3
        '{"reviewerID": "U1", "asin": "B000000003", "unixReviewTime": ' + HUGE_NUMBER + "}",   # 4
        '{"reviewerID": "U1", "asin": "B\\udfff", "unixReviewTime": 1300000000}',              # 5
        json.dumps({"reviewerID": "U1", "asin": "B000000004", "unixReviewTime": HUGE_NUMBER}),  # 6
        json.dumps({"reviewerID": "U1", "asin": "B000000004", "unixReviewTime": "\u00b2"}),     # 7
        ('{"reviewerID": "U2", "asin": "B000000002", "unixReviewTime": 1300000000, '
         '"reviewText": "fine \\ud83d\\ude00 and \\ud800 unused"}'),                            # 8 kept
        review_2014("U2", "B000000001", 2),                                                     # 9
    ])
    caplog.set_level(logging.WARNING, logger="pipelines")
    out = tmp_path / "ds"
    assert run_main(amazon.main, ["--reviews", str(reviews), "--out", str(out)]) == 0
    dataset = load_dataset(out)
    assert dataset.manifest["counts"] == {"users": 2, "items": 2, "interactions": 3}
    assert dataset.manifest["skipped"] == {"reviews_malformed_line": 4, "reviews_bad_timestamp": 2}
    places = skip_places(caplog)
    assert places["reviews_malformed_line"] == [f"{reviews}:{n}" for n in (2, 3, 4, 5)]
    assert places["reviews_bad_timestamp"] == [f"{reviews}:{n}" for n in (6, 7)]
    details = " ".join(r.getMessage() for r in caplog.records)
    assert "nested too deeply" in details and "lone surrogate" in details and "4,300 digits" in details


def test_one_hostile_metadata_line_is_a_counted_skip_with_its_line(reviews_2014, tmp_path, caplog):
    """JSON and Python-literal lines nested 100,000 deep, lone surrogates in kept text, a 5,000-digit
    number: each skips its line (with file:line), the other lines give their text."""
    meta = write_lines(tmp_path / "meta_Hostile.json", [
        json.dumps({"asin": "B000000001", "title": "Shirt"}),                  # 1
        DEEP_JSON,                                                             # 2
        "{'asin': 'B000000002', 'title': " + "(" * 100_000 + ")" * 100_000 + "}",  # 3
        '{"asin": "B000000002", "title": "Sock \\ud800"}',                     # 4
        "{'asin': 'B000000003', 'brand': 'Acme \\udc00'}",                     # 5
        '{"asin": "B000000004", "title": ' + HUGE_NUMBER + "}",                # 6
        "{'asin': 'B000000004', 'title': " + HUGE_NUMBER + "}",               # 7
        json.dumps({"asin": "B000000003", "categories": [[[["Hats"]]]] + [[[]] * 1]}),  # 8 kept
        json.dumps({"asin": "B000000002", "title": "Warm socks"}),             # 9
    ])
    caplog.set_level(logging.WARNING, logger="pipelines")
    out = tmp_path / "ds"
    assert run_main(amazon.main, ["--reviews", str(reviews_2014), "--meta", str(meta), "--out", str(out)]) == 0
    dataset = load_dataset(out)
    assert dataset.manifest["skipped"]["metadata_malformed_line"] == 6
    assert skip_places(caplog)["metadata_malformed_line"][:5] == [f"{meta}:{n}" for n in (2, 3, 4, 5, 6)]
    titles = dict(zip(dataset.items["item_id"], dataset.items["title"]))
    assert titles["B000000001"] == "Shirt" and titles["B000000002"] == "Warm socks"
    assert dict(zip(dataset.items["item_id"], dataset.items["categories"]))["B000000003"] == "Hats"


def test_deeply_nested_categories_do_not_exhaust_the_stack():
    deep = ["Hats"]
    for _ in range(5_000):
        deep = [deep, []]
    assert amazon._categories(deep) == "Hats"
