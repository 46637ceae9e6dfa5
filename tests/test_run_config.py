import pytest

from mfn4rec_tf.run_config import RunConfig, load_config


def test_defaults_are_the_papers():
    config = RunConfig()
    assert config.model.variant == "mfn4rec" and config.data.protocol == "paper"
    assert config.train.batch_size == 64 and config.train.learning_rate == 0.01 and config.model.dropout == 0.3
    assert config.model.id_hidden_units == config.model.modality_hidden_units == config.model.memory_dim == 20
    assert config.retrain  # paper protocol retrains on train + validation


def test_yaml_then_overrides_in_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  variant: mfn4rec-g\n  memory_dim: 8\ntrain:\n  epochs: 3\n")
    config = load_config(path, ["train.epochs=4", "data.modalities=[text]", "train.retrain=false"])
    assert config.model.variant == "mfn4rec-g" and config.model.memory_dim == 8
    assert config.train.epochs == 4 and config.data.modalities == ["text"] and not config.retrain


def test_resolved_yaml_round_trips(tmp_path):
    config = load_config(None, ["model.variant=mfn4rec-m", "data.protocol=leave-one-out", "train.seed=3"])
    path = tmp_path / "config.yaml"
    path.write_text(config.to_yaml())
    assert load_config(path) == config
    assert not config.retrain  # not the paper protocol


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.memory_dimension=3"], "model.memory_dimension"),
        (["trian.epochs=3"], "trian"),
        (["model.variant=bert4rec"], "variant"),
        (["data.protocol=random"], "protocol"),
        (["train.epochs=0"], "train.epochs"),
        (["train.epochs=three"], "train.epochs"),
        (["model.dropout=1.5"], "dropout"),
        (["train.targets=every"], "targets"),
        (["train.strategy=tpu"], "strategy"),
        (["epochs"], "section.key=value"),
        (["data=3"], "data"),
        (["train.learning_rate=fast"], "train.learning_rate"),
        (["train.exclude_history=maybe"], "train.exclude_history"),
        (["train.retrain=yes please"], "train.retrain"),
        (["train.seed=1.5"], "train.seed"),
        (["data.demo_seed=x"], "data.demo_seed"),
        (["data.path=3"], "data.path"),
        (["data.modalities=text"], "data.modalities"),
        (["model.memory_mode=loop"], "memory_mode"),
        (["train.patience=0"], "train.patience"),
    ],
)
def test_bad_settings_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, overrides)


def test_settings_that_must_agree_are_validated_together():
    """The recipe ties 64-d item vectors; setting the paper's widths back one `--set` at a time passes through
    output_units 64 with id_embedding_dim 25, which alone is invalid: the overrides are checked as a whole."""
    config = load_config(None, ["model.id_embedding_dim=25", "model.output_units=20",
                                "model.tie_item_embeddings=false"], preset="recipe")
    assert (config.model.id_embedding_dim, config.model.output_units) == (25, 20)
    assert not config.model.tie_item_embeddings
    with pytest.raises(ValueError, match="output_units` must equal `model.id_embedding_dim"):
        load_config(None, ["model.id_embedding_dim=25"], preset="recipe")


def test_a_key_set_as_a_section_and_as_a_value_is_named():
    with pytest.raises(ValueError, match="`model` is set both as a mapping and as a value"):
        load_config(None, ["model=3", "model.memory_dim=4"])
    with pytest.raises(ValueError, match="`train.epochs` is set both"):
        load_config(None, ["train.epochs.x=1", "train.epochs=3"])


def test_bad_files(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ValueError, match="mapping"):
        load_config(bad)


def test_numbers_yaml_reads_as_strings_are_converted():
    config = load_config(None, ["train.learning_rate=1e-3", "model.dropout=3e-1"])
    assert config.train.learning_rate == 0.001 and config.model.dropout == 0.3


def test_model_section_mirrors_model_config_with_the_same_defaults():
    """ModelSection is ModelConfig minus what the data or the run decides; no field may drift."""
    import dataclasses

    from mfn4rec_tf.config import ModelConfig
    from mfn4rec_tf.run_config import ModelSection

    config_fields = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
    section_fields = {f.name: f.default for f in dataclasses.fields(ModelSection)}
    decided_elsewhere = {"num_items", "modalities", "seed"}  # the dataset, the dataset, train.seed
    assert set(section_fields) - {"modality_hidden_units"} == set(config_fields) - decided_elsewhere
    for name, default in section_fields.items():
        if name in config_fields:
            assert default == config_fields[name], name
