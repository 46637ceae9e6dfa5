"""`.keras` files saved by the package before the model registry (commit dbd2dd5) still load and
predict the same: the Keras classes they name are registered from the registry's modules."""

from pathlib import Path

import numpy as np
import pytest

from mfn4rec_tf.model import load_model, with_output_mode

FIXTURES = Path(__file__).parent / "fixtures"
CASES = ("mfn4rec", "sasrec", "vbpr", "mv_rnn_3mdae")


@pytest.mark.parametrize("name", CASES)
def test_a_model_saved_before_the_registry_loads_and_predicts_the_same(name):
    saved = np.load(FIXTURES / "legacy_models.npz")
    model = load_model(FIXTURES / f"{name}.keras")
    inputs = {key: saved[key] for key in model.input}
    np.testing.assert_allclose(model.predict_on_batch(inputs)["logits"], saved[f"{name}_logits"], rtol=1e-5, atol=1e-5)
    # ... and is a model of the package's contract: the other output mode works on it.
    last = with_output_mode(model, "last").predict_on_batch(inputs)["logits"]
    lengths = (saved["item_ids"] != 0).sum(axis=1)
    expected = saved[f"{name}_logits"][np.arange(len(lengths)), lengths - 1]
    np.testing.assert_allclose(last, expected, rtol=1e-5, atol=1e-5)
