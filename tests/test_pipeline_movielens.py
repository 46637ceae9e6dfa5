"""Tests of `pipelines.movielens`: tiny ML-1M (.dat) and ML-latest (.csv) fixtures written into tmp_path."""

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mfn4rec_tf.dataset import load_dataset
from pipelines import movielens
from pipelines.common import run_main

REPO = Path(__file__).resolve().parents[1]

# ML-1M ratings: 3 users, movies 10 / 1193 / 2 (string order "10" < "1193" < "2"), one line per skip reason.
RATINGS_DAT = [
    "1::10::5::978300760",     # 1
    "1::2::3::978300000",      # 2
    "1::1193::4::978301000",   # 3
    "oops",                    # 4 malformed_line
    "2::x7::4::978300100",     # 5 non_integer_id
    "2::10::4::97830.5",       # 6 bad_timestamp
    "2::2::good::978300200",   # 7 bad_rating
    "2::2::2::978300300",      # 8
    "2::1193::1::978300250",   # 9 (earlier than line 8)
    "1::10::5::978300760",     # 10 duplicate of line 1
    "",                        # 11 empty_line
    "1::2::3",                 # 12 malformed_line
    "3::2::4::978300900",      # 13
]
MOVIES_DAT = [
    "1193::One Flew Over the Cuckoo's Nest (1975)::Drama",
    "2::Amélie (2001)::Comedy|Romance",
    "10::GoldenEye (1995)::Action|Adventure|Thriller",
    "555::Not Rated (1999)::Drama",  # nobody rated it
    "xx::Bad Id (2000)::Drama",       # movies_non_integer_id
    "garbage line",                   # movies_malformed_line
]
# ML-latest ratings: 3 users, movies 31 / 1029 / 1061 / 7 (string order "1029" < "1061" < "31" < "7").
RATINGS_CSV = [
    "userId,movieId,rating,timestamp",
    "1,31,2.5,1260759144",
    "1,1029,3.0,1260759179",
    "1,1061,3.0,1260759182",
    "2,31,2.0,1260759100",
    "2,1061,0.5,1260759200",
    "2,abc,4.0,1260759300",  # line 7: non_integer_id
    "3,7,4.0,1260759300",
    "3,1029,4.5",            # line 9: malformed_line
    "3,1029,4.5,1260759000",
]
MOVIES_CSV = [
    "movieId,title,genres",
    "31,Dangerous Minds (1995),Drama",
    "1029,Dumbo (1941),Animation|Children|Drama|Musical",
    '1061,"American President, The (1995)",Comedy|Drama|Romance',
    "7,Sabrina (1995),(no genres listed)",
]


def write(path, lines, encoding="utf-8"):
    path.write_bytes("\n".join(lines).encode(encoding) + b"\n")
    return path


@pytest.fixture
def ml1m(tmp_path):
    """ML-1M-style ratings.dat and a LATIN-1 movies.dat."""
    return write(tmp_path / "ratings.dat", RATINGS_DAT), write(tmp_path / "movies.dat", MOVIES_DAT, "latin-1")


@pytest.fixture
def mllatest(tmp_path):
    """ML-latest-style ratings.csv (with header) and a quoted UTF-8 movies.csv."""
    return write(tmp_path / "ratings.csv", RATINGS_CSV), write(tmp_path / "movies.csv", MOVIES_CSV)


def run(argv, capsys):
    """Runs the CLI like `python -m pipelines.movielens`; returns (exit status, stdout, stderr)."""
    status = run_main(movielens.main, [str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def sequences(dataset):
    """user -> [item_id, ...] in the stored (time) order, and user -> timestamps."""
    ids = dataset.item_ids()
    frame = dataset.interactions
    items = {u: [ids[i] for i in g["item_index"]] for u, g in frame.groupby("user_id", sort=True)}
    times = {u: g["timestamp"].tolist() for u, g in frame.groupby("user_id", sort=True)}
    return items, times


def test_ml1m_dat(ml1m, tmp_path, caplog):
    ratings, movies = ml1m
    assert b"Am\xe9lie" in movies.read_bytes()  # really LATIN-1, not UTF-8
    with caplog.at_level(logging.WARNING, logger="pipelines"):
        path = movielens.main(["--ratings", str(ratings), "--movies", str(movies), "--out", str(tmp_path / "ds")])
    dataset = load_dataset(path)
    assert dataset.manifest["counts"] == {"users": 3, "items": 3, "interactions": 6}
    assert dataset.manifest["skipped"] == {
        "bad_rating": 1, "bad_timestamp": 1, "duplicate_events": 1, "empty_line": 1, "malformed_line": 2,
        "metadata_not_in_catalogue": 1, "movies_malformed_line": 1, "movies_non_integer_id": 1,
        "non_integer_id": 1,
    }
    items = dataset.items
    assert items["item_index"].tolist() == [1, 2, 3]
    assert items["item_id"].tolist() == ["10", "1193", "2"]  # sorted as strings, not numbers
    assert items["title"].tolist() == ["GoldenEye (1995)", "One Flew Over the Cuckoo's Nest (1975)", "Amélie (2001)"]
    assert items["genres"].tolist() == ["Action, Adventure, Thriller", "Drama", "Comedy, Romance"]
    seqs, times = sequences(dataset)
    assert seqs == {"1": ["2", "10", "1193"], "2": ["1193", "2"], "3": ["2"]}
    assert times == {"1": [978300000, 978300760, 978301000], "2": [978300250, 978300300], "3": [978300900]}
    assert dataset.modality_names == ()
    logged = " ".join(r.getMessage() for r in caplog.records)
    for line, reason in [(4, "malformed_line"), (5, "non_integer_id"), (6, "bad_timestamp"), (7, "bad_rating"),
                         (11, "empty_line"), (12, "malformed_line")]:
        assert f"({reason}) at {ratings}:{line}" in logged
    assert f"(movies_non_integer_id) at {movies}:5" in logged


def test_ml_latest_csv(mllatest, tmp_path, capsys, caplog):
    ratings, movies = mllatest
    with caplog.at_level(logging.WARNING, logger="pipelines"):
        status, out, _ = run(["--ratings", ratings, "--movies", movies, "--out", tmp_path / "ds"], capsys)
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert f"(non_integer_id) at {ratings}:7" in logged and f"(malformed_line) at {ratings}:9" in logged
    assert status == 0
    assert "users 3  items 4  interactions 7" in out
    dataset = load_dataset(tmp_path / "ds")
    assert dataset.manifest["skipped"] == {"malformed_line": 1, "non_integer_id": 1}
    assert dataset.manifest["filters"] == []
    items = dataset.items.set_index("item_id")
    assert dataset.items["item_id"].tolist() == ["1029", "1061", "31", "7"]
    assert items.loc["1061", "title"] == "American President, The (1995)"  # quoted comma kept
    assert items.loc["1029", "genres"] == "Animation, Children, Drama, Musical"
    assert pd.isna(items.loc["7", "genres"])  # "(no genres listed)"
    seqs, _ = sequences(dataset)
    assert seqs == {"1": ["31", "1029", "1061"], "2": ["31", "1061"], "3": ["1029", "7"]}
    assert dataset.manifest["sources"][0]["format"] == "csv"


def test_min_rating_keeps_ratings_at_or_above(mllatest, tmp_path):
    ratings, movies = mllatest
    dataset = load_dataset(movielens.main(["--ratings", str(ratings), "--movies", str(movies), "--min-rating", "3",
                                           "--out", str(tmp_path / "ds")]))
    seqs, _ = sequences(dataset)
    assert seqs == {"1": ["1029", "1061"], "3": ["1029", "7"]}  # 3.0 kept; 2.5, 2.0, 0.5 dropped
    assert dataset.manifest["counts"] == {"users": 2, "items": 3, "interactions": 4}
    assert dataset.manifest["filters"] == [
        {"filter": "min_rating", "min": 3.0, "interactions_removed": 3, "users_removed": 1, "items_removed": 1}]
    assert dataset.manifest["skipped"]["metadata_not_in_catalogue"] == 1  # movie 31 left the catalogue


def test_min_rating_comes_before_the_user_filter(mllatest, tmp_path):
    ratings, _ = mllatest
    dataset = load_dataset(movielens.main(["--ratings", str(ratings), "--min-rating", "3", "--min-user", "2",
                                           "--out", str(tmp_path / "ds")]))
    assert [step["filter"] for step in dataset.manifest["filters"]] == ["min_rating", "user_length"]
    assert dataset.manifest["filters"][1]["users_removed"] == 0
    assert sorted(dataset.interactions["user_id"].unique()) == ["1", "3"]
    assert "title" not in dataset.items.columns  # no --movies: ids only


@pytest.mark.parametrize("name, lines", [
    ("ratings.txt", ["1::5::3::100", "2::5::4::200"]),    # "::" in the content: ML-1M layout
    ("ratings.data", ["1,5,3,100", "2,5,4,200"]),         # CSV without header
])
def test_format_from_content(tmp_path, name, lines):
    path = write(tmp_path / name, lines)
    dataset = load_dataset(movielens.main(["--ratings", str(path), "--out", str(tmp_path / "ds")]))
    assert dataset.manifest["counts"] == {"users": 2, "items": 1, "interactions": 2}
    assert dataset.interactions["timestamp"].tolist() == [100, 200]


def test_many_bad_lines_are_all_counted(tmp_path):
    path = write(tmp_path / "ratings.dat", [f"{k}::5::five::100" for k in range(8)] + ["1::5::3::100"])
    dataset = load_dataset(movielens.main(["--ratings", str(path), "--out", str(tmp_path / "ds")]))
    assert dataset.manifest["skipped"] == {"bad_rating": 8}
    assert dataset.manifest["counts"]["interactions"] == 1


def test_text_fields_choose_the_item_columns(ml1m, tmp_path):
    ratings, movies = ml1m
    dataset = load_dataset(movielens.main(["--ratings", str(ratings), "--movies", str(movies), "--text-fields",
                                           "title", "--out", str(tmp_path / "ds")]))
    assert list(dataset.items.columns) == ["item_index", "item_id", "title"]


def test_posters_is_an_alias_of_images():
    parser = movielens.build_parser()
    assert parser.parse_args(["--ratings", "r", "--out", "o", "--posters", "p"]).images == "p"
    assert parser.parse_args(["--ratings", "r", "--out", "o", "--images", "q"]).images == "q"


def test_posters_give_the_image_modality(ml1m, tmp_path, monkeypatch):
    """Posters of the right movies reach the right rows (VGG-16 replaced by a per-channel mean, to stay fast)."""
    if not (REPO / "pipelines" / "image_features.py").exists():
        pytest.skip("pipelines/image_features.py is not written yet")
    import keras
    from PIL import Image

    from pipelines import image_features

    def channel_means(weights):
        inputs = keras.Input((224, 224, 3))
        return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs))  # [b, 3] BGR minus ImageNet means

    monkeypatch.setattr(image_features, "build_image_model", channel_means)
    posters = tmp_path / "posters"
    posters.mkdir()
    Image.new("RGB", (40, 60), (255, 0, 0)).save(posters / "2.png")      # Amélie: red
    Image.new("RGB", (40, 60), (0, 0, 255)).save(posters / "1193.png")   # Cuckoo's Nest: blue
    Image.new("RGB", (40, 60), (0, 255, 0)).save(posters / "555.png")    # not in the catalogue
    ratings, movies = ml1m
    dataset = load_dataset(movielens.main(["--ratings", str(ratings), "--movies", str(movies), "--posters",
                                           str(posters), "--weights", "none", "--out", str(tmp_path / "ds")]))
    assert dataset.manifest["modalities"]["image"]["items_with"] == 2
    assert dataset.presence("image").tolist() == [False, False, True, True]
    features = np.asarray(dataset.features("image"))
    mean_bgr = np.array([103.939, 116.779, 123.68])
    np.testing.assert_allclose(features[2], np.array([255, 0, 0]) - mean_bgr, atol=0.5)  # blue, in BGR order
    np.testing.assert_allclose(features[3], np.array([0, 0, 255]) - mean_bgr, atol=0.5)  # red
    np.testing.assert_array_equal(features[:2], 0.0)


def _one_error_line(err):
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err
    return lines[0]


def test_missing_file_is_one_error_line(tmp_path, capsys):
    status, _, err = run(["--ratings", tmp_path / "nope.dat", "--out", tmp_path / "ds"], capsys)
    assert status == 2
    assert "nope.dat" in _one_error_line(err) and not (tmp_path / "ds").exists()


def test_missing_csv_column_is_one_error_line(tmp_path, capsys):
    path = write(tmp_path / "ratings.csv", ["userId,itemId,rating,timestamp", "1,2,3,4"])
    status, _, err = run(["--ratings", path, "--out", tmp_path / "ds"], capsys)
    line = _one_error_line(err)
    assert status == 2
    assert "ratings.csv" in line and "'movieId'" in line and "itemId" in line


def test_no_valid_line_names_the_file(tmp_path, capsys):
    path = write(tmp_path / "ratings.dat", ["a::b::c::d", "junk"])
    status, _, err = run(["--ratings", path, "--out", tmp_path / "ds"], capsys)
    line = _one_error_line(err)
    assert status == 2 and str(path) in line and "no valid rating line" in line


def test_empty_after_filtering_is_one_error_line(ml1m, tmp_path, capsys):
    ratings, _ = ml1m
    status, _, err = run(["--ratings", ratings, "--min-rating", "6", "--out", tmp_path / "ds"], capsys)
    assert status == 2
    assert "no interactions left" in _one_error_line(err)
    assert not (tmp_path / "ds").exists()


def test_glove_text_modality(ml1m, tmp_path):
    if not (REPO / "pipelines" / "text_features.py").exists():
        pytest.skip("pipelines/text_features.py is not written yet")
    ratings, movies = ml1m
    glove = tmp_path / "glove.txt"
    glove.write_text("amélie 1.0 2.0 3.0\ndrama -1.0 0.5 0.25\nzzz 9 9 9\n", encoding="utf-8")
    path = movielens.main(["--ratings", str(ratings), "--movies", str(movies), "--glove", str(glove),
                           "--dim", "3", "--out", str(tmp_path / "ds")])
    dataset = load_dataset(path, verify_features=True)
    assert dataset.manifest["modalities"]["text"]["items_with"] == 2
    present = dataset.presence("text")
    assert present.tolist() == [False, False, True, True]  # padding, GoldenEye, Cuckoo's Nest (Drama), Amélie
    features = np.asarray(dataset.features("text"))
    np.testing.assert_allclose(features[2], [-1.0, 0.5, 0.25])   # only known word: "drama"
    np.testing.assert_allclose(features[3], [1.0, 2.0, 3.0])     # only known word: "amélie" (read as LATIN-1)
    np.testing.assert_array_equal(features[:2], 0.0)
