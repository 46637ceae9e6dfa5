"""Keras 3 layers of MFN4Rec, one concept per module."""

from mfn4rec_tf.layers.differentiated_attention import DifferentiatedAttention
from mfn4rec_tf.layers.fully_connected import FullyConnected
from mfn4rec_tf.layers.gated_memory import GatedMemory
from mfn4rec_tf.layers.gated_memory_cell import GatedMemoryCell
from mfn4rec_tf.layers.item_features import (
    FeatureItemLogits,
    ItemIdEmbedding,
    set_id_inference_scale,
    set_known_items,
)
from mfn4rec_tf.layers.item_logits import ItemLogits, TiedItemLogits, has_item_vectors
from mfn4rec_tf.layers.multi_gru import MultiGRU
from mfn4rec_tf.layers.multi_view_fusion import MultiViewFusion
from mfn4rec_tf.layers.padding import LastValidStep, PaddingMask
from mfn4rec_tf.layers.presence import AppendPresence

__all__ = [
    "AppendPresence",
    "DifferentiatedAttention",
    "FeatureItemLogits",
    "FullyConnected",
    "GatedMemory",
    "GatedMemoryCell",
    "ItemIdEmbedding",
    "ItemLogits",
    "LastValidStep",
    "MultiGRU",
    "MultiViewFusion",
    "PaddingMask",
    "TiedItemLogits",
    "has_item_vectors",
    "set_id_inference_scale",
    "set_known_items",
]
