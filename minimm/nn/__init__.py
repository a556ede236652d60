"""Layer 3: modules that own parameters and call the functional layer."""
from .module import Module, Parameter, Sequential
from . import init
from .attention import MultiHeadAttention
from .transformer import (LearnedPositionalEmbedding, SinusoidalPositionalEncoding,
                          TransformerEncoder, TransformerEncoderLayer,
                          sinusoidal_positional_encoding)
from .patch import PatchEmbedding, patchify
from .conv import AvgPool2d, Conv2d, Flatten, MaxPool2d
from .layers import (GELU, BatchNorm2d, Dropout, Embedding, LayerNorm, Linear, ReLU,
                     Sigmoid, Tanh)
from .recurrent import LSTM
from .decoder import CausalSelfAttention, DecoderBlock, KVCache, prefix_causal_mask
from .whitening import PatchWhitening
