"""Item image features: the 1000-way output of an ImageNet VGG-16 (the paper's image modality).

`find_images` maps item ids to files in a folder, `image_features` reads each file with Pillow,
turns it into a 224x224 RGB array, applies `keras.applications.vgg16.preprocess_input` (RGB -> BGR,
ImageNet channel means subtracted) and runs the model in batches:

    x_i = VGG16(preprocess_input(resize_224(rgb(image_i))))     # [1000] class probabilities

Items without an image (path None) or with an unreadable file get a zero row and `present=False`;
the report counts and lists them (unreadable files with the reason), and the run goes on.

Reading an image: EXIF orientation is applied, transparent pixels are composited onto white (product
photos with transparent backgrounds are meant to be seen on white), the image is converted to RGB and
resized to 224x224 with bilinear filtering, without cropping (the aspect ratio is not kept, as in
`keras.utils.load_img(path, target_size=(224, 224))`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence

import keras
import numpy as np
import pandas as pd
from PIL import Image, ImageOps

logger = logging.getLogger("pipelines.image_features")

IMAGE_SIZE = 224
# Extensions `find_images` looks for (case-insensitive), in order of preference.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
# How many unreadable files are logged one by one before only the count is reported.
_MAX_LOGGED = 10
# Errors Pillow raises for missing, unreadable, truncated or corrupt files.
_READ_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def build_image_model(weights: str | os.PathLike | None = "imagenet") -> keras.Model:
    """VGG-16 with its 1000-way softmax classifier (`include_top=True`), the paper's image encoder.

    Args:
        weights: "imagenet" (default: Keras downloads the ImageNet weights once into
            `~/.keras/models/`), the path of a local weights file for this architecture
            (`.weights.h5`, or a legacy `.h5` such as `vgg16_weights_tf_dim_ordering_tf_kernels.h5`),
            or None / "none" for random weights (offline tests only: the features mean nothing).

    Returns:
        A `keras.Model` mapping `[batch, 224, 224, 3]` preprocessed images to `[batch, 1000]`.

    Raises:
        RuntimeError: the ImageNet weights could not be downloaded (no internet access).
        ValueError: a weights file that does not exist, has another extension, or does not fit.
    """
    if weights is None or (isinstance(weights, str) and weights.lower() == "none"):
        return keras.applications.VGG16(include_top=True, weights=None)
    if isinstance(weights, str) and weights == "imagenet":
        try:
            return keras.applications.VGG16(include_top=True, weights="imagenet")
        except Exception as err:  # Keras raises a bare Exception for a failed download.
            raise RuntimeError(
                "Could not get the ImageNet VGG-16 weights (Keras downloads them from "
                f"storage.googleapis.com; this machine may have no internet access): {err}\n"
                "Download vgg16_weights_tf_dim_ordering_tf_kernels.h5 elsewhere and pass it with "
                "`--weights FILE` (weights=FILE), or put it in ~/.keras/models/; or pass "
                "`--weights none` (weights=None) for random weights, for tests only."
            ) from err
    path = os.fspath(weights)
    if not os.path.isfile(path):
        raise ValueError(
            f"build_image_model: `weights` must be 'imagenet', None/'none' or an existing weights "
            f"file, received {path!r} (no such file)"
        )
    if not path.endswith((".h5", ".hdf5")):
        raise ValueError(
            f"build_image_model: weights file {path!r} must be a `.weights.h5` or legacy `.h5` file"
        )
    try:
        return keras.applications.VGG16(include_top=True, weights=path)
    except (ValueError, OSError) as err:  # wrong layer count / shapes, or not an HDF5 file
        raise ValueError(
            f"build_image_model: weights file {path!r} does not fit VGG-16 with its 1000-way top: {err}"
        ) from err


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Reads one image file as float32 RGB `[224, 224, 3]` in [0, 255] (see the module docstring).

    Raises:
        OSError / ValueError / SyntaxError / EOFError: the file is missing, unreadable or corrupt.
    """
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        if image.mode in ("RGBA", "LA", "PA") or (
            image.mode == "P" and "transparency" in image.info
        ):
            image = image.convert("RGBA")
            background = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, image)
        image = image.convert("RGB").resize(
            (IMAGE_SIZE, IMAGE_SIZE), resample=Image.Resampling.BILINEAR
        )
        return np.asarray(image, dtype=np.float32)  # [224, 224, 3]


@dataclasses.dataclass
class ImageFeatureReport:
    """Counts from one `image_features` run.

    Attributes:
        images: number of items (entries of `paths`).
        missing: items without an image (path None).
        unreadable: (path, reason) of every file that could not be read; those items get zeros.
        dim: feature width (the model's output width).
    """

    images: int
    missing: int = 0
    unreadable: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    dim: int = 0

    @property
    def present(self) -> int:
        """Items that got a feature vector."""
        return self.images - self.missing - len(self.unreadable)

    def summary(self) -> str:
        """A short multi-line, human-readable account of the run."""
        lines = [
            f"images: {self.images} items ({self.present} with features of dim {self.dim}, "
            f"{self.missing} without an image, {len(self.unreadable)} unreadable)"
        ]
        for path, reason in self.unreadable[:_MAX_LOGGED]:
            lines.append(f"  unreadable: {path}: {reason}")
        if len(self.unreadable) > _MAX_LOGGED:
            lines.append(f"  ... and {len(self.unreadable) - _MAX_LOGGED} more unreadable files")
        return "\n".join(lines)


def _is_missing(path) -> bool:
    return path is None or (pd.api.types.is_scalar(path) and not isinstance(path, str) and pd.isna(path))


def _output_width(model: keras.Model) -> int:
    shape = getattr(model, "output_shape", None)
    if isinstance(shape, tuple) and len(shape) == 2 and shape[-1] is not None:
        return int(shape[-1])
    dummy = np.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3), np.float32)
    return int(np.shape(model.predict_on_batch(dummy))[-1])


def image_features(
    paths: Sequence,
    *,
    weights: str | os.PathLike | None = "imagenet",
    model: keras.Model | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray, ImageFeatureReport]:
    """Image feature of each item: the model's output on its preprocessed 224x224 image.

        x_i = model(vgg16.preprocess_input(load_image(path_i)))    # [d]; d = 1000 for VGG-16

    Args:
        paths: one image path (str or path-like) per item, or None (or NaN) for an item without one.
        weights: weights for `build_image_model` when `model` is None; see there.
        model: a prebuilt model instead, mapping `[b, 224, 224, 3]` preprocessed images to `[b, d]`.
        batch_size: images per model call.
        progress: show a `keras.utils.Progbar` over the items.

    Returns:
        features: float32 `[n, d]`; zero rows where `present` is False.
        present: bool `[n]`; False for items without an image or with an unreadable file.
        report: an `ImageFeatureReport` (also logged).
    """
    if isinstance(paths, (str, bytes, os.PathLike)):
        raise TypeError("image_features: `paths` must be a sequence of paths, received a single path")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"image_features: `batch_size` must be a positive integer, received {batch_size!r}")
    paths = list(paths)
    if model is None:
        model = build_image_model(weights)  # built first: a missing download fails before any reading
    n = len(paths)
    report = ImageFeatureReport(images=n)
    present = np.zeros(n, dtype=bool)
    features = None
    bar = keras.utils.Progbar(n, unit_name="image") if progress else None

    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        pixels, rows = [], []
        for row in range(start, stop):
            if _is_missing(paths[row]):
                report.missing += 1
                continue
            path = os.fspath(paths[row])
            try:
                pixels.append(load_image(path))
            except _READ_ERRORS as err:
                reason = f"{type(err).__name__}: {err}"
                report.unreadable.append((path, reason))
                if len(report.unreadable) <= _MAX_LOGGED:
                    logger.warning("Unreadable image %s (item %d): %s", path, row, reason)
                continue
            rows.append(row)
        if rows:
            batch = keras.applications.vgg16.preprocess_input(np.stack(pixels))  # [b, 224, 224, 3] BGR
            outputs = np.asarray(model.predict_on_batch(batch), dtype=np.float32)  # [b, d]
            if outputs.ndim != 2 or outputs.shape[0] != len(rows):
                raise ValueError(
                    f"image_features: `model` must map [b, {IMAGE_SIZE}, {IMAGE_SIZE}, 3] to [b, d], "
                    f"it returned shape {outputs.shape} for b={len(rows)}"
                )
            if features is None:
                features = np.zeros((n, outputs.shape[1]), dtype=np.float32)  # [n, d]
            features[rows] = outputs
            present[rows] = True
        if bar is not None:
            bar.update(stop)

    if features is None:  # no readable image at all
        features = np.zeros((n, _output_width(model)), dtype=np.float32)
    report.dim = features.shape[1]
    logger.info("Image features:\n%s", report.summary())
    if report.unreadable:
        logger.warning(
            "%d of %d image files were unreadable; their items got zero image features (present=False)",
            len(report.unreadable), n,
        )
    return features, present, report


def find_images(folder: str | os.PathLike, item_ids: Sequence) -> list[str | None]:
    """Path of `<item_id>.jpg|.jpeg|.png` in `folder` for each item id, or None where there is none.

    The extension is matched case-insensitively (`B00X.JPG` counts), the id exactly (`str(item_id)`).
    Where one id has several files, `.jpg` is taken over `.jpeg` over `.png`. The folder is listed
    once, so this stays fast for 100k files.

    Args:
        folder: the image folder (not searched recursively).
        item_ids: the item ids, in the order wanted (str or int).

    Returns:
        One path (folder joined with the file name) or None per item id.

    Raises:
        ValueError: `folder` is not a directory.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise ValueError(f"find_images: image folder {folder!r} does not exist or is not a directory")
    by_stem: dict[str, tuple[int, str]] = {}  # id -> (preference rank, file name)
    with os.scandir(folder) as entries:
        for entry in entries:
            stem, extension = os.path.splitext(entry.name)
            extension = extension.lower()
            if extension not in IMAGE_EXTENSIONS or not entry.is_file():
                continue
            candidate = (IMAGE_EXTENSIONS.index(extension), entry.name)
            if stem not in by_stem or candidate < by_stem[stem]:
                by_stem[stem] = candidate
    result = [
        os.path.join(folder, by_stem[key][1]) if (key := str(item_id)) in by_stem else None
        for item_id in item_ids
    ]
    found = sum(path is not None for path in result)
    logger.info("Found images for %d of %d items in %s", found, len(result), folder)
    return result
