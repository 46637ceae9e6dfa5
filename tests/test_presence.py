import numpy as np
from layer_harness import check_layer

from mfn4rec_tf.layers import AppendPresence


def test_harness(tmp_path):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(2, 3, 4)).astype("float32")
    present = np.array([[1, 0, 1], [0, 1, 1]], "float32")
    out = check_layer(AppendPresence, [features, present], expected_shape=(2, 3, 5), tmp_path=tmp_path, trainable=False)
    np.testing.assert_allclose(out[..., :4], features * present[..., None])
    np.testing.assert_allclose(out[..., 4], present)
