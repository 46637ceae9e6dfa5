"""Tests for pipelines/image_features.py: reading, preprocessing, batching, reporting, VGG-16 building."""

import logging

import keras
import numpy as np
import pytest
from PIL import Image

from pipelines.image_features import (
    ImageFeatureReport,
    build_image_model,
    find_images,
    image_features,
    load_image,
)

# keras.applications.vgg16.preprocess_input: RGB -> BGR, then these means subtracted.
BGR_MEANS = np.array([103.939, 116.779, 123.68])
BIAS = np.array([0.5, -0.25, 2.0])


def expected_feature(rgb):
    """Stand-in model output for a solid-colour image: BGR pixel minus means, plus the bias."""
    return np.asarray(rgb, dtype=float)[::-1] - BGR_MEANS + BIAS


def stand_in_model(crop=((108, 108), (108, 108))):
    """[b, 224, 224, 3] -> [b, 3]: mean pixel of a crop, identity kernel, constant bias.

    The default crop is the central 8x8 pixels: averaging all 224x224 float32 pixels would round
    the mean by ~0.05.
    """
    model = keras.Sequential(
        [
            keras.Input((224, 224, 3)),
            keras.layers.Cropping2D(crop),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(
                3,
                kernel_initializer=keras.initializers.Identity(),
                bias_initializer=keras.initializers.Constant(0.0),
            ),
        ]
    )
    model.layers[-1].bias.assign(BIAS.astype("float32"))
    return model


def solid(path, rgb, size=(30, 20), mode="RGB", **save_kwargs):
    Image.new(mode, size, rgb).save(path, **save_kwargs)
    return str(path)


@pytest.fixture
def images(tmp_path):
    paths = {
        "red": solid(tmp_path / "red.png", (200, 50, 10)),
        "gray": solid(tmp_path / "gray.png", 90, size=(16, 16), mode="L"),
        "clear": solid(tmp_path / "clear.png", (10, 20, 30, 0), size=(12, 12), mode="RGBA"),
        "photo": solid(tmp_path / "photo.JPG", (40, 160, 220), format="JPEG", quality=95),
        "bad": str(tmp_path / "bad.jpg"),
        "truncated": str(tmp_path / "truncated.png"),
        "missing": str(tmp_path / "nope.png"),
    }
    (tmp_path / "bad.jpg").write_bytes(b"this is not an image \x00\x01\x02" * 10)
    noise = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "full.png")
    full = (tmp_path / "full.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(full[: len(full) // 2])
    return paths


def test_features_are_the_model_output_on_preprocessed_images(images):
    order = ["red", None, "gray", "bad", "missing", "clear", "truncated", "photo"]
    paths = [None if key is None else images[key] for key in order]
    features, present, report = image_features(
        paths, model=stand_in_model(), batch_size=2, progress=False
    )
    assert features.dtype == np.float32 and features.shape == (8, 3)
    assert present.tolist() == [True, False, True, False, False, True, False, True]
    np.testing.assert_allclose(features[0], expected_feature((200, 50, 10)), atol=1e-3)
    np.testing.assert_allclose(features[2], expected_feature((90, 90, 90)), atol=1e-3)
    np.testing.assert_allclose(features[5], expected_feature((255, 255, 255)), atol=1e-3)  # white
    np.testing.assert_allclose(features[7], expected_feature((40, 160, 220)), atol=3.0)  # JPEG
    np.testing.assert_array_equal(features[[1, 3, 4, 6]], 0.0)

    assert report.images == 8 and report.missing == 1 and report.present == 4 and report.dim == 3
    reasons = dict(report.unreadable)
    assert list(reasons) == [images["bad"], images["missing"], images["truncated"]]
    assert reasons[images["bad"]].startswith("UnidentifiedImageError")
    assert reasons[images["missing"]].startswith("FileNotFoundError")
    assert "truncated" in reasons[images["truncated"]]


def test_unreadable_files_are_logged_and_summarised(images, caplog):
    with caplog.at_level(logging.WARNING, logger="pipelines.image_features"):
        _, _, report = image_features(
            [images["bad"], images["red"]], model=stand_in_model(), progress=False
        )
    assert f"Unreadable image {images['bad']}" in caplog.text
    assert "1 of 2 image files were unreadable" in caplog.text
    summary = report.summary()
    assert summary.splitlines()[0] == (
        "images: 2 items (1 with features of dim 3, 0 without an image, 1 unreadable)"
    )
    assert f"unreadable: {images['bad']}: UnidentifiedImageError" in summary


def test_image_orientation_and_resize_keep_the_whole_picture(tmp_path):
    # Four 50x50 quadrants; the model sees only rows/columns 20..27 of the 224x224 input.
    colours = {(0, 0): (250, 0, 0), (0, 1): (0, 250, 0), (1, 0): (0, 0, 250), (1, 1): (250, 250, 0)}
    pixels = np.zeros((100, 100, 3), np.uint8)
    for (row, col), rgb in colours.items():
        pixels[row * 50 : (row + 1) * 50, col * 50 : (col + 1) * 50] = rgb
    Image.fromarray(pixels).save(tmp_path / "quad.png")
    # The same picture stored upside down, with an EXIF tag saying "rotate by 180 degrees".
    exif = Image.Exif()
    exif[0x0112] = 3
    Image.fromarray(pixels[::-1, ::-1]).save(tmp_path / "quad_exif.jpg", quality=98, exif=exif)

    model = stand_in_model(crop=((20, 196), (20, 196)))
    paths = [str(tmp_path / "quad.png"), str(tmp_path / "quad_exif.jpg")]
    features, present, _ = image_features(paths, model=model, progress=False)
    assert present.all()
    np.testing.assert_allclose(features[0], expected_feature(colours[(0, 0)]), atol=1e-3)
    np.testing.assert_allclose(features[1], expected_feature(colours[(0, 0)]), atol=3.0)


def test_load_image_gives_224_rgb(images):
    pixels = load_image(images["gray"])
    assert pixels.shape == (224, 224, 3) and pixels.dtype == np.float32
    np.testing.assert_array_equal(pixels, 90.0)


def test_no_readable_image_gives_zeros_of_model_width(images):
    features, present, report = image_features(
        [None, images["bad"], float("nan")], model=stand_in_model(), progress=False
    )
    assert features.shape == (3, 3) and not features.any() and not present.any()
    assert report.missing == 2 and len(report.unreadable) == 1 and report.present == 0


def test_progress_bar_runs_over_items(images, capsys):
    image_features([images["red"]] * 3, model=stand_in_model(), batch_size=2, progress=True)
    assert "3/3" in capsys.readouterr().out


def test_model_must_return_one_row_per_image(images):
    bad_model = keras.Sequential([keras.Input((224, 224, 3)), keras.layers.Conv2D(2, 3)])
    with pytest.raises(ValueError, match=r"\[b, d\].*shape \(1, 222, 222, 2\)"):
        image_features([images["red"]], model=bad_model, progress=False)


def test_image_features_rejects_bad_arguments(images):
    with pytest.raises(TypeError, match="single path"):
        image_features(images["red"], model=stand_in_model(), progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        image_features([images["red"]], model=stand_in_model(), batch_size=0, progress=False)


# ---------------------------------------------------------------- build_image_model

# What keras.applications.VGG16(weights="imagenet") raises on a machine without internet access.
DOWNLOAD_ERROR = (
    "URL fetch failure on https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
    "vgg16_weights_tf_dim_ordering_tf_kernels.h5: None -- [Errno -2] Name or service not known"
)


@pytest.fixture
def vgg_calls(monkeypatch):
    """Replaces keras.applications.VGG16 by a recorder; "imagenet" fails as without internet."""
    calls = []

    def fake_vgg16(**kwargs):
        calls.append(kwargs)
        if kwargs.get("weights") == "imagenet":
            raise Exception(DOWNLOAD_ERROR)
        return stand_in_model()

    monkeypatch.setattr(keras.applications, "VGG16", fake_vgg16)
    return calls


def test_imagenet_download_failure_gives_clear_error(vgg_calls, images):
    with pytest.raises(RuntimeError, match=r"(?s)Name or service not known.*--weights FILE.*--weights none") as info:
        build_image_model()
    assert str(info.value.__cause__) == DOWNLOAD_ERROR
    assert vgg_calls == [{"include_top": True, "weights": "imagenet"}]
    # image_features builds the model before reading any file, with the same error.
    with pytest.raises(RuntimeError, match="--weights FILE"):
        image_features([images["red"]], progress=False)


def test_build_image_model_weights_choices(vgg_calls, tmp_path):
    weights_file = tmp_path / "vgg16.weights.h5"
    weights_file.write_bytes(b"")
    build_image_model(None)
    build_image_model("none")
    build_image_model("None")
    build_image_model(weights_file)
    assert [call["weights"] for call in vgg_calls] == [None, None, None, str(weights_file)]
    assert all(call["include_top"] for call in vgg_calls)


def test_build_image_model_rejects_bad_weights_files(vgg_calls, tmp_path):
    with pytest.raises(ValueError, match=r"no_such\.h5.*no such file"):
        build_image_model(tmp_path / "no_such.h5")
    text_file = tmp_path / "weights.txt"
    text_file.write_text("x")
    with pytest.raises(ValueError, match=r"weights\.txt.*\.h5"):
        build_image_model(text_file)
    assert vgg_calls == []


@pytest.mark.slow
def test_real_vgg16_gives_1000_way_softmax(images, tmp_path):
    features, present, report = image_features(
        [images["red"], images["photo"]], weights=None, batch_size=2, progress=False
    )
    assert features.shape == (2, 1000) and features.dtype == np.float32 and present.all()
    np.testing.assert_allclose(features.sum(axis=1), 1.0, atol=1e-4)
    assert (features >= 0).all() and report.dim == 1000
    # A file that is not HDF5 is reported as a weights file that does not fit.
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match=r"garbage\.h5.*does not fit"):
        build_image_model(garbage)


# ---------------------------------------------------------------- find_images


def test_find_images_matches_ids_and_extensions(tmp_path):
    for name in ["A1.jpg", "B2.PNG", "C3.JpEg", "D4.gif", "E5.png", "E5.jpg", "7.png", "a1.jpg"]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "F6.jpg").mkdir()  # a folder, not a file
    ids = ["A1", "B2", "C3", "D4", "E5", "F6", "Z9", 7]
    found = find_images(tmp_path, ids)
    names = [None if path is None else path.rsplit("/", 1)[-1] for path in found]
    assert names == ["A1.jpg", "B2.PNG", "C3.JpEg", None, "E5.jpg", None, None, "7.png"]
    assert found[0] == str(tmp_path / "A1.jpg")


def test_find_images_requires_a_folder(tmp_path):
    with pytest.raises(ValueError, match=r"nowhere.*not a directory"):
        find_images(tmp_path / "nowhere", ["A1"])


def test_report_present_property():
    report = ImageFeatureReport(images=5, missing=1, unreadable=[("x.jpg", "OSError: bad")], dim=4)
    assert report.present == 3
