import numpy as np
import pytest
from layer_harness import check_layer

from mfn4rec_tf.layers import ItemLogits


def test_harness(tmp_path):
    x = np.random.default_rng(0).normal(size=(3, 2, 4)).astype("float32")
    check_layer(lambda: ItemLogits(6), [x], expected_shape=(3, 2, 6), tmp_path=tmp_path)


def test_values_and_padding_column():
    layer = ItemLogits(4)
    x = np.array([[1.0, 2.0]], "float32")
    layer.build(x.shape)
    kernel = np.arange(8, dtype="float32").reshape(2, 4)
    layer.kernel.assign(kernel)
    layer.bias.assign(np.array([5.0, 1.0, 0.0, -1.0], "float32"))
    logits = layer(x).numpy()
    np.testing.assert_allclose(logits[0, 1:], (x @ kernel + [5.0, 1.0, 0.0, -1.0])[0, 1:])
    assert logits[0, 0] == -1e9


def test_needs_padding_and_one_item():
    with pytest.raises(ValueError, match="vocabulary_size"):
        ItemLogits(1)
