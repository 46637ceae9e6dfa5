"""The training options of the MFN4Rec recipe (`mfn4rec_tf.optim`, `model.embedding_dropout`,
`model.tie_item_embeddings`) and the named presets: each option's effect, and defaults unchanged."""

import json
from types import SimpleNamespace

import keras
import numpy as np
import numpy_reference as ref
import pytest
from conftest import make_config, make_inputs, randomize_weights

from mfn4rec_tf import optim, presets, training
from mfn4rec_tf.dataset import write_dataset
from mfn4rec_tf.demo import DemoSpec, generate
from mfn4rec_tf.model import build_model, load_model
from mfn4rec_tf.run_config import RunConfig, TrainSection, load_config

LENGTHS = [6, 2, 4, 1]


def _train(**changes):
    return TrainSection(**changes)


# --- defaults and presets ---------------------------------------------------------------------


def test_defaults_are_the_papers_adam_and_model():
    optimizer = optim.make_optimizer(TrainSection())
    assert type(optimizer) is keras.optimizers.Adam
    assert float(optimizer.learning_rate) == pytest.approx(0.01)
    assert optimizer.global_clipnorm is None and optimizer.clipnorm is None
    assert not optimizer.weight_decay
    model = build_model(make_config())
    names = [layer.name for layer in model.layers]
    assert "item_embedding" in names and not any(name.endswith("_dropout") for name in names)
    assert type(model.get_layer("item_logits")).__name__ == "ItemLogits"


def test_preset_paper_is_the_defaults_and_recipe_sets_the_new_options():
    assert load_config(preset="paper") == RunConfig() == load_config()
    recipe = load_config(preset="recipe")
    assert recipe.model.tie_item_embeddings and recipe.model.output_units == recipe.model.id_embedding_dim
    assert recipe.train.optimizer == "adamw" and recipe.train.weight_decay > 0
    # Trained on prefixes, the loss at the trained positions only, over the epochs of its schedule.
    assert (recipe.data.train_windows, recipe.data.window_stride, recipe.data.max_length) == ("sliding", 1, 50)
    assert recipe.train.softmax_chunk > 0 and (recipe.train.epochs, recipe.train.patience) == (15, 3)
    # Everything a user sets still wins over the preset.
    assert load_config(preset="recipe", overrides=["train.weight_decay=0.2"]).train.weight_decay == 0.2
    with pytest.raises(ValueError, match="Preset 'recipe' is for the mfn4rec models"):
        load_config(preset="recipe", overrides=["model.variant=sasrec"])
    with pytest.raises(ValueError, match="Unknown preset"):
        presets.get("nope", "mfn4rec")


def test_recipe_space_holds_the_recipe_preset():
    from mfn4rec_tf.search_spaces import load_space

    space = load_space("recipe")
    recipe = presets.PRESETS["recipe"]
    for parameter in space.searched:
        section, name = parameter.key.split(".")
        value = recipe.get(section, {}).get(name, getattr(RunConfig(), section).__dict__[name])
        if parameter.form == "choice":
            assert value in parameter.values, parameter.key
        else:
            assert parameter.min <= value <= parameter.max, parameter.key


@pytest.mark.parametrize("overrides, message", [
    (["train.optimizer=sgd"], "train.optimizer"),
    (["train.weight_decay=0.1"], "set `train.optimizer: adamw`"),
    (["train.lr_schedule=step"], "train.lr_schedule"),
    (["train.warmup_steps=-1"], "train.warmup_steps"),
    (["train.min_learning_rate=0.1"], "train.min_learning_rate"),
    (["train.plateau_factor=1.0"], "train.plateau_factor"),
    (["train.clipnorm=0"], "train.clipnorm"),
    (["model.embedding_dropout=1.0"], "model.embedding_dropout"),
    (["model.tie_item_embeddings=true"], "must equal `model.id_embedding_dim`"),
    (["model.variant=sasrec", "model.embedding_dropout=0.2"], "MFN4Rec's settings"),
])
def test_bad_settings_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config(overrides=overrides)


# --- AdamW, clipping, schedules ---------------------------------------------------------------


def _numpy_adam(w, grads, lr, beta_1=0.9, beta_2=0.999, epsilon=1e-7, decay=0.0):
    """Keras' Adam (and AdamW's decoupled decay first), step after step, in float64."""
    w = w.astype(np.float64)
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        w = w - lr * decay * w
        m = beta_1 * m + (1 - beta_1) * g
        v = beta_2 * v + (1 - beta_2) * g * g
        alpha = lr * np.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)
        w = w - alpha * m / (np.sqrt(v) + epsilon)
    return w


def test_adamw_step_matches_numpy_and_leaves_biases_undecayed():
    rng = np.random.default_rng(0)
    kernel = keras.Variable(rng.normal(size=(3, 4)).astype("float32"), name="kernel")
    bias = keras.Variable(rng.normal(size=(4,)).astype("float32"), name="bias")
    grads = [rng.normal(size=(3, 4)).astype("float32"), rng.normal(size=(4,)).astype("float32")]
    start = [kernel.numpy(), bias.numpy()]
    optimizer = optim.make_optimizer(_train(optimizer="adamw", weight_decay=0.5, learning_rate=0.1))
    optimizer.apply(grads, [kernel, bias])
    np.testing.assert_allclose(kernel.numpy(), _numpy_adam(start[0], [grads[0]], 0.1, decay=0.5), rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(bias.numpy(), _numpy_adam(start[1], [grads[1]], 0.1, decay=0.0), rtol=1e-5, atol=2e-6)
    # The decay is really there: without it the kernel would land elsewhere.
    assert not np.allclose(kernel.numpy(), _numpy_adam(start[0], [grads[0]], 0.1), rtol=1e-3)


def test_adamw_exclusions_survive_a_checkpoint(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=optim.make_optimizer(_train(optimizer="adamw", weight_decay=0.1)), loss="mse")
    model.fit(np.ones((4, 3)), np.ones((4, 2)), verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.optimizer, optim.AdamW)
    kernel, bias = loaded.layers[0].kernel, loaded.layers[0].bias
    assert loaded.optimizer._use_weight_decay(kernel) and not loaded.optimizer._use_weight_decay(bias)


def test_clipnorm_rescales_the_global_gradient_norm():
    rng = np.random.default_rng(1)
    w0 = rng.normal(size=(5,)).astype("float32")
    grads = [rng.normal(size=(5,)).astype("float32") * 100.0, rng.normal(size=(5,)).astype("float32") * 0.01]
    variable = keras.Variable(w0)
    optimizer = optim.make_optimizer(_train(clipnorm=0.5, learning_rate=0.05))
    for g in grads:
        optimizer.apply([g], [variable])
    clipped = [g * min(1.0, 0.5 / np.linalg.norm(g)) for g in grads]
    np.testing.assert_allclose(variable.numpy(), _numpy_adam(w0, clipped, 0.05), rtol=1e-5, atol=2e-6)
    assert not np.allclose(variable.numpy(), _numpy_adam(w0, grads, 0.05), rtol=1e-4)


def test_warmup_cosine_values():
    schedule = optim.learning_rate(_train(lr_schedule="warmup_cosine", learning_rate=0.02, warmup_steps=4,
                                          min_learning_rate=0.002, epochs=3), steps=8)  # 24 steps in all
    for step in (0, 1, 3, 4, 10, 23, 24, 100):
        if step < 4:
            expected = 0.02 * (step + 1) / 4
        else:
            progress = min(1.0, (step - 4) / 20)
            expected = 0.002 + 0.018 * 0.5 * (1 + np.cos(np.pi * progress))
        assert float(schedule(step)) == pytest.approx(expected, rel=1e-5), step
    assert optim.learning_rate(_train()) == 0.01  # constant: the number itself
    with pytest.raises(ValueError, match="batches per epoch"):
        optim.learning_rate(_train(lr_schedule="warmup_cosine"))


def test_plateau_multiplies_after_patience_and_stops_at_the_floor():
    train = _train(lr_schedule="plateau", learning_rate=0.01, plateau_factor=0.5, plateau_patience=2,
                   min_learning_rate=0.003)
    state = optim.PlateauState.fresh(train)
    rates = [optim.PlateauState.after_epoch(train, state, improved) for improved in
             (True, False, False, True, False, False, False, False)]
    assert rates == pytest.approx([0.01, 0.01, 0.005, 0.005, 0.005, 0.003, 0.003, 0.003])


# --- model options ----------------------------------------------------------------------------


class _TiedWeights:
    """The reference reads the input embedding from `item_embedding`: here, the tied table."""

    def __init__(self, model):
        self.model = model

    def get_layer(self, name):
        if name == "item_embedding":
            return SimpleNamespace(embeddings=self.model.get_layer("item_logits").embeddings)
        return self.model.get_layer(name)


def test_tied_embeddings_share_one_variable_and_match_the_numpy_reference():
    config = make_config(tie_item_embeddings=True, output_units=6)  # id_embedding_dim 6
    model = build_model(config)
    layer = model.get_layer("item_logits")
    assert "item_embedding" not in [lay.name for lay in model.layers]
    tables = [w for w in model.weights if tuple(w.shape) == (config.vocabulary_size, 6)]
    assert tables == [layer.embeddings]  # one (N + 1, d) table: the input and the output item vectors
    untied = build_model(make_config(output_units=6))
    assert len(model.trainable_weights) == len(untied.trainable_weights) - 1
    randomize_weights(model, seed=3)
    inputs = make_inputs(config, LENGTHS, seed=3)
    _, logits = ref.forward(config, ref.keras_weights(_TiedWeights(model), config), inputs)
    out = model(inputs, training=False)["logits"]
    real = inputs["item_ids"] != 0
    np.testing.assert_allclose(np.asarray(out)[real][:, 1:], logits[real][:, 1:], rtol=1e-4, atol=1e-4)


def test_tied_model_saves_and_loads_with_one_table(tmp_path):
    config = make_config(tie_item_embeddings=True, output_units=6)
    model = build_model(config, output_mode="last")
    inputs = make_inputs(config, LENGTHS)
    before = np.asarray(model(inputs)["logits"])
    model.save(tmp_path / "tied.keras")
    loaded = load_model(tmp_path / "tied.keras")
    np.testing.assert_allclose(np.asarray(loaded(inputs)["logits"]), before, rtol=1e-6)
    assert "item_embedding" not in [lay.name for lay in loaded.layers]
    assert loaded.get_layer("item_logits").embeddings is not None


def test_embedding_dropout_acts_in_training_only():
    plain = build_model(make_config(dropout=0.0))
    dropped = build_model(make_config(dropout=0.0, embedding_dropout=0.5))
    assert {"item_ids_dropout", "image_dropout", "text_dropout"} <= {lay.name for lay in dropped.layers}
    for source, target in zip(plain.trainable_weights, dropped.trainable_weights):
        target.assign(source)
    inputs = make_inputs(make_config(), LENGTHS)
    inference = np.asarray(dropped(inputs, training=False)["logits"])
    np.testing.assert_allclose(inference, np.asarray(plain(inputs, training=False)["logits"]), rtol=1e-6)
    assert not np.allclose(np.asarray(dropped(inputs, training=True)["logits"]), inference, rtol=1e-3)
    np.testing.assert_allclose(np.asarray(plain(inputs, training=True)["logits"]), inference, rtol=1e-6)


# --- runs: schedules through fit and resume ---------------------------------------------------


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    items, interactions, features, _ = generate(DemoSpec(num_users=120, num_items=60, max_length=10))
    path = tmp_path_factory.mktemp("data") / "small"
    return write_dataset(path, name="small", items=items, interactions=interactions, features=features)


def _config(data, **train):
    sizes = dict(id_embedding_dim=6, output_units=6, id_hidden_units=4, modality_hidden_units=4, memory_dim=4,
                 fc_hidden_units=6)
    return RunConfig.from_dict({"data": {"path": str(data), "protocol": "paper"}, "model": sizes,
                                "train": {"epochs": 4, "patience": 4, "batch_size": 16, **train}})


def test_warmup_cosine_position_survives_a_checkpoint(small_data, tmp_path):
    config = _config(small_data, lr_schedule="warmup_cosine", warmup_steps=3, min_learning_rate=0.001)
    run = training.run_training(config, tmp_path / "run", progress=False)
    assert run["test"]
    model = load_model(tmp_path / "run" / "model.keras")
    schedule = model.optimizer._learning_rate
    assert isinstance(schedule, optim.WarmupCosine) and schedule.warmup_steps == 3
    assert int(model.optimizer.iterations) > 0  # where the schedule stands travels with the model
    assert float(model.optimizer.learning_rate) == pytest.approx(float(schedule(model.optimizer.iterations)))


def test_plateau_schedule_resumes_where_it_stopped(small_data, tmp_path, monkeypatch):
    config = _config(small_data, lr_schedule="plateau", plateau_patience=1, plateau_factor=0.5, learning_rate=0.05)
    reference = training.run_training(config, tmp_path / "reference", progress=False)
    saved = json.loads((tmp_path / "reference" / "state.json").read_text())
    assert len(saved["plateau"]["rates"]) == len([h for h in saved["history"] if h["phase"] == "select"])

    real = training._checkpoint

    def killed_after_second_epoch(model, run_dir, state, phase):
        real(model, run_dir, state, phase)
        if phase == "select" and state["epoch"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(training, "_checkpoint", killed_after_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        training.run_training(config, tmp_path / "run", progress=False)
    monkeypatch.setattr(training, "_checkpoint", real)
    keras.backend.clear_session()
    resumed = training.run_training(config, tmp_path / "run", resume=True, progress=False)
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["plateau"] == saved["plateau"]
    for split in ("valid", "test"):
        for key, value in reference[split].items():
            assert resumed[split][key] == pytest.approx(value, abs=1e-6), (split, key)


@pytest.mark.parametrize("windows, stride", [("last", None), ("sliding", None), ("sliding", 1), ("sliding", 3)])
def test_cosine_schedule_counts_the_steps_an_epoch_really_has(windows, stride):
    from mfn4rec_tf.data import training_windows
    from mfn4rec_tf.run_config import DataSection

    rng = np.random.default_rng(0)
    sequences = [rng.integers(1, 50, size=n) for n in (1, 2, 5, 9, 10, 11, 23, 40)]
    data = DataSection(max_length=10, train_windows=windows, window_stride=stride)
    count = training.training_example_count(sequences, data)
    if windows == "last":
        assert count == 7  # the sequence of one item gives nothing
    else:
        assert count == training_windows(sequences, 10, stride)[3]["examples"] > 7


def test_small_window_strides_through_keras_softmax_are_warned_about(caplog):
    def warned(**sections):
        config = RunConfig.from_dict({name: values for name, values in sections.items()})
        caplog.clear()
        with caplog.at_level("WARNING", logger="mfn4rec_tf.training"):
            result = training._warn_context_logits(config)
        assert result == ("--softmax-chunk" in caplog.text)
        return result

    sliding = {"train_windows": "sliding", "window_stride": 1, "max_length": 50}
    assert warned(data=sliding)
    assert not warned(data=sliding, train={"softmax_chunk": 4096})  # the loss at the trained positions only
    assert not warned(data=sliding, train={"loss": "sampled"})
    assert not warned(data={**sliding, "window_stride": 50})  # whole windows: every position is trained
    assert not warned(data={"max_length": 50})
