"""mfn4rec_tf: MFN4Rec, a memory fusion network for multimodal sequential recommendation, in Keras 3."""

from mfn4rec_tf._version import __version__
from mfn4rec_tf.config import VARIANTS, ModalityConfig, ModelConfig
from mfn4rec_tf.layers import DifferentiatedAttention, GatedMemoryCell, MultiGRU
from mfn4rec_tf.model import OUTPUT_MODES, build_model, model_inputs, with_output_mode

__all__ = [
    "OUTPUT_MODES",
    "VARIANTS",
    "DifferentiatedAttention",
    "GatedMemoryCell",
    "ModalityConfig",
    "ModelConfig",
    "MultiGRU",
    "__version__",
    "build_model",
    "model_inputs",
    "with_output_mode",
]
