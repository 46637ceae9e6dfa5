import numpy as np
from layer_harness import check_layer

from mfn4rec_tf.layers import LastValidStep, PaddingMask


def test_padding_mask_marks_index_zero():
    mask = PaddingMask()(np.array([[4, 0, 2], [0, 0, 0]], "int32")).numpy()
    assert mask.tolist() == [[True, False, True], [False, False, False]]


def test_last_valid_step_harness(tmp_path):
    seq = np.random.default_rng(0).normal(size=(3, 4, 2)).astype("float32")
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 1, 0]], bool)
    out = check_layer(LastValidStep, [seq, mask], expected_shape=(3, 2), tmp_path=tmp_path, trainable=False)
    np.testing.assert_allclose(out, seq[[0, 1, 2], [1, 3, 2]])


def test_last_valid_step_any_padding_side_and_empty_rows():
    seq = np.arange(24, dtype="float32").reshape(4, 3, 2)
    mask = np.array([[0, 1, 1], [1, 0, 0], [0, 0, 0], [1, 0, 1]], bool)
    out = LastValidStep()(seq, mask).numpy()
    np.testing.assert_allclose(out, seq[[0, 1, 2, 3], [2, 0, 0, 2]])
