"""Named presets of MFN4Rec's settings (`python -m mfn4rec_tf.fit --preset NAME`).

A named preset is a partial run configuration, `{"data": {...}, "model": {...}, "train": {...}}`, applied over the
model's registry preset and under everything a user sets: defaults < the model's registry preset
< the named preset < `--config` < `--set` < the flags.

- `paper`: the paper's Table 1 and Sec. 4.1 settings, which are the dataclass defaults, so it sets
  nothing (`--preset paper` is the same run as no preset).
- `recipe`: a regularised, wider MFN4Rec, its values set before any search and kept because it beat
  `paper` on validation Recall@20 of Amazon 2014 Beauty (benchmarks/RESULTS.md, "MFN4Rec recipe
  ablation"; a 2-epoch comparison, not a verdict): AdamW with decoupled weight decay, dropout on
  the GRU inputs, a warm-up + cosine learning rate, gradient clipping, and 64-d item vectors shared
  between the input embedding and the output layer; trained on prefixes (one example per history
  of up to 50 items and its next item: `data.train_windows: sliding`, `data.window_stride: 1`,
  with the full softmax at the trained positions only, `train.softmax_chunk: 4096`) for 15 epochs
  (the length of its cosine schedule) with patience 3. The prefix layout gave MFN4Rec +48% test
  Recall@20 at 5 epochs on 5,000 Beauty users, and the recipe on prefixes was ahead of SASRec on
  all of Beauty (benchmarks/RESULTS.md, "Whole Beauty, both on prefixes"). For the MFN4Rec
  variants only.

Nothing here imports TensorFlow.
"""

from __future__ import annotations

from mfn4rec_tf import registry

PRESETS = {
    "paper": {},
    "recipe": {
        "data": {
            "max_length": 50,
            "train_windows": "sliding",
            "window_stride": 1,
        },
        "model": {
            "id_embedding_dim": 64,
            "output_units": 64,
            "tie_item_embeddings": True,
            "id_hidden_units": 40,
            "modality_hidden_units": 40,
            "memory_dim": 40,
            "fc_hidden_units": 100,
            "embedding_dropout": 0.3,
        },
        "train": {
            "optimizer": "adamw",
            "weight_decay": 0.05,
            "lr_schedule": "warmup_cosine",
            "warmup_steps": 200,
            "min_learning_rate": 0.0005,
            "clipnorm": 1.0,
            "softmax_chunk": 4096,
            "epochs": 15,
            "patience": 3,
        },
    },
}
"""Name -> partial run configuration."""

FAMILIES = {"paper": None, "recipe": "mfn4rec"}
"""Name -> the registry family it applies to (None: every model)."""


def names() -> tuple:
    return tuple(PRESETS)


def applies(name: str, variant: str) -> bool:
    """Whether preset `name` is for model `variant` (every model for a preset without a family)."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}. Known: {', '.join(PRESETS)}")
    family = FAMILIES[name]
    return family is None or variant not in registry.names() or registry.get(variant).family == family


def get(name: str, variant: str) -> dict:
    """The settings of preset `name` for model `variant`.

    Raises:
        ValueError: no such preset, or it does not apply to `variant`.
    """
    if not applies(name, variant):
        family = FAMILIES[name]
        raise ValueError(f"Preset {name!r} is for the {family} models {registry.names(family)}. "
                         f"Received: model.variant={variant!r}")
    return PRESETS[name]
