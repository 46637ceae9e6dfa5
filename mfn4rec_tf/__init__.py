"""mfn4rec_tf: MFN4Rec, a memory fusion network for multimodal sequential recommendation, in Keras 3.

The model API is imported on first use (`mfn4rec_tf.build_model`, ...), so the data side
(`mfn4rec_tf.dataset`, the pipelines) starts without loading TensorFlow.
"""

import importlib

from mfn4rec_tf._version import __version__
from mfn4rec_tf.config import VARIANTS, ModalityConfig, ModelConfig

_LAZY = {
    "DifferentiatedAttention": "mfn4rec_tf.layers",
    "GatedMemoryCell": "mfn4rec_tf.layers",
    "MultiGRU": "mfn4rec_tf.layers",
    "OUTPUT_MODES": "mfn4rec_tf.model",
    "build_model": "mfn4rec_tf.model",
    "load_model": "mfn4rec_tf.model",
    "model_inputs": "mfn4rec_tf.model",
    "with_output_mode": "mfn4rec_tf.model",
}

__all__ = ["VARIANTS", "ModalityConfig", "ModelConfig", "__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mfn4rec_tf' has no attribute {name!r}")
