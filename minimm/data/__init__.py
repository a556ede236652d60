"""The data layer: CIFAR-10 (download, verify, parse), synthetic captions, spirals, batching.

Imports only the backend and NumPy — nothing here knows about tensors or modules.

    from minimm.data import cifar10, captions, loader
    (x_train, y_train), (x_test, y_test) = cifar10.load_cifar10(path="cifar-10-binary.tar.gz")
"""
from . import captions, cifar10, loader, spiral
from .captions import Vocabulary, caption_vocabulary, encode, make_captions, tokenize
from .cifar10 import CLASSES, SUPERCLASSES, class_names, load_cifar10, superclass
from .loader import (CIFAR10_MEAN, CIFAR10_STD, Loader, batches, epoch_permutation,
                     normalize_images, num_batches)
from .spiral import spiral_data

__all__ = ["cifar10", "captions", "loader", "spiral", "Loader", "epoch_permutation", "spiral_data",
           "Vocabulary", "caption_vocabulary", "encode",
           "make_captions", "tokenize", "CLASSES", "SUPERCLASSES", "class_names", "load_cifar10",
           "superclass", "CIFAR10_MEAN", "CIFAR10_STD", "batches", "normalize_images",
           "num_batches"]
