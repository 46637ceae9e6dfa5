"""The paper's baselines (Sec. 4.2) and SASRec, as models with MFN4Rec's contract.

Every builder returns a functional `keras.Model` with the inputs of `mfn4rec_tf.model.model_inputs`
for the modalities it reads (`mfn4rec_tf.config.MODEL_MODALITIES`) and the outputs of
`mfn4rec_tf.model.model_head` (`logits` over every item, `user_representation`), in either output
mode, with layers named `padding_mask`, `fc_out` and `item_logits`. So `fit`, `evaluate`, `tune`,
`compare` and `export` treat them exactly as MFN4Rec, and `with_output_mode` works on them.

Modules (each docstring cites the paper it implements and the readings we chose):

- `bpr`: `bpr`, `vbpr` (pairwise BPR loss, `loss_for`)
- `sequential`: `lstm`, `sasrec` (item IDs only)
- `multimodal`: `p-rnn`, `mv-rnn-con`, `mv-rnn-fus`, `mv-rnn-3mdae`, `vcsrs`
"""

from __future__ import annotations

import importlib

from mfn4rec_tf.config import BASELINES, ModelConfig

_MODULES = {
    "bpr": "mfn4rec_tf.baselines.bpr",
    "vbpr": "mfn4rec_tf.baselines.bpr",
    "lstm": "mfn4rec_tf.baselines.sequential",
    "sasrec": "mfn4rec_tf.baselines.sequential",
    "p-rnn": "mfn4rec_tf.baselines.multimodal",
    "mv-rnn-con": "mfn4rec_tf.baselines.multimodal",
    "mv-rnn-fus": "mfn4rec_tf.baselines.multimodal",
    "mv-rnn-3mdae": "mfn4rec_tf.baselines.multimodal",
    "vcsrs": "mfn4rec_tf.baselines.multimodal",
}
assert set(_MODULES) == set(BASELINES)


def _module(variant):
    if variant not in _MODULES:
        raise ValueError(f"{variant!r} is not a baseline. Baselines: {BASELINES}")
    return importlib.import_module(_MODULES[variant])


def build_baseline(config: ModelConfig, output_mode: str = "sequence", item_features=None):
    """Builds baseline `config.variant` (see the module that defines it for what it reads).

    Args:
        config: the model configuration; `config.modalities` are the modalities it reads.
        output_mode: `"sequence"` or `"last"` (`mfn4rec_tf.model.OUTPUT_MODES`).
        item_features: `{modality: (N + 1, dim) array}` for the models that score items by their
            features (VBPR).
    """
    return _module(config.variant).BUILDERS[config.variant](config, output_mode, item_features=item_features)


def loss_for(config: ModelConfig):
    """The training loss of `config.variant` when it is not softmax cross-entropy, else None."""
    if config.variant not in _MODULES:
        return None
    losses = getattr(_module(config.variant), "LOSSES", {})
    factory = losses.get(config.variant)
    return None if factory is None else factory(config)
