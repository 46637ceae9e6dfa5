import pytest

from mfn4rec_tf.config import VARIANTS, ModalityConfig, ModelConfig


def test_defaults_are_the_papers():
    config = ModelConfig(num_items=100)
    assert config.variant == "mfn4rec"
    assert [(m.name, m.dim, m.hidden_units) for m in config.modalities] == [("image", 1000, 20), ("text", 100, 20)]
    assert config.id_embedding_dim == 25 and config.id_hidden_units == 20 and config.memory_dim == 20
    assert config.fc_hidden_units == 50 and config.output_units == 20 and config.dropout == 0.3
    assert config.hidden_sizes == (20, 20, 20) and config.vocabulary_size == 101


def test_dict_round_trip():
    config = ModelConfig(num_items=5, variant="mfn4rec-g", modalities=(ModalityConfig("text", 8, 3, presence=True),),
                         seed=4)
    assert ModelConfig.from_dict(config.to_dict()) == config


def test_modalities_from_plain_dicts():
    config = ModelConfig.from_dict({"num_items": 3, "modalities": [{"name": "audio", "dim": 12}]})
    assert config.modalities == (ModalityConfig("audio", 12),)
    assert ModelConfig.from_dict({"num_items": 3, "modalities": []}).modalities == ()


@pytest.mark.parametrize(
    "data, message",
    [
        ({"num_items": 3, "hiden_units": 4}, "hiden_units"),
        ({"num_items": 3, "modalities": [{"name": "text", "dim": 4, "size": 1}]}, "size"),
        ({"num_items": 0}, "num_items"),
        ({"num_items": 3, "variant": "mfn4rec-x"}, "variant"),
        ({"num_items": 3, "dropout": 1.5}, "dropout"),
        ({"num_items": 3, "output_activation": "relu"}, "output_activation"),
        ({"num_items": 3, "modalities": [{"name": "Text", "dim": 4}]}, "name"),
        ({"num_items": 3, "modalities": [{"name": "item_ids", "dim": 4}]}, "name"),
        ({"num_items": 3, "modalities": [{"name": "a_present", "dim": 4}]}, "_present"),
        ({"num_items": 3, "modalities": [{"name": "a", "dim": 4}, {"name": "a", "dim": 2}]}, "unique"),
        ({"num_items": 3, "modalities": [{"name": "a", "dim": 0}]}, "dim"),
        ({"num_items": 3, "variant": "mfn4rec-add", "modalities": [{"name": "a", "dim": 2, "hidden_units": 3}]},
         "equal"),
        ({"num_items": 3, "modalities": "text"}, "list"),
    ],
)
def test_bad_values_are_named(data, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig.from_dict(data)


def test_every_variant_is_constructible():
    for variant in VARIANTS:
        assert ModelConfig(num_items=2, variant=variant).variant == variant
