"""Every Function in minimm names the test that checks its gradient against finite differences.

A new Function that is not listed here fails this test: add its float64 gradcheck (and
gradgradcheck where it is twice differentiable) and list it.
"""
import importlib

import minimm  # noqa: F401  (imports every layer, so every Function subclass exists)
import minimm.amp  # noqa: F401
import minimm.compress  # noqa: F401
import minimm.models  # noqa: F401
import minimm.nn.fast  # noqa: F401  (the fast kernels' Functions)
import minimm.train  # noqa: F401
from minimm.autograd import Function

GRADCHECKED_BY = {  # Function -> "test module::test function" that gradchecks it
    "Add": "test_ops::test_binary_forward_and_grad", "Sub": "test_ops::test_binary_forward_and_grad",
    "Mul": "test_ops::test_binary_forward_and_grad", "Div": "test_ops::test_binary_forward_and_grad",
    "Maximum": "test_ops::test_binary_forward_and_grad", "Neg": "test_ops::test_unary_forward_and_grad",
    "Pow": "test_ops::test_unary_forward_and_grad", "Exp": "test_ops::test_unary_forward_and_grad",
    "Log": "test_ops::test_unary_forward_and_grad", "Sqrt": "test_ops::test_unary_forward_and_grad",
    "Abs": "test_ops::test_unary_forward_and_grad", "Clip": "test_ops::test_unary_forward_and_grad",
    "Tanh": "test_ops::test_unary_forward_and_grad", "Sigmoid": "test_ops::test_unary_forward_and_grad",
    "ReLU": "test_ops::test_unary_forward_and_grad", "MatMul": "test_ops::test_matmul",
    "Sum": "test_ops::test_reduction", "Max": "test_ops::test_reduction",
    "Where": "test_ops::test_where", "Reshape": "test_ops::test_shape_op",
    "Transpose": "test_ops::test_shape_op", "BroadcastTo": "test_ops::test_shape_op",
    "SumTo": "test_ops::test_binary_gradgrad", "GetItem": "test_ops::test_shape_op",
    "GetItemGrad": "test_ops::test_shape_op", "Concat": "test_ops::test_concat",
    "Split": "test_ops::test_split", "Softmax": "test_ops::test_softmax_and_log_softmax",
    "LogSoftmax": "test_ops::test_softmax_and_log_softmax", "LogSumExp": "test_ops::test_logsumexp",
    "CrossEntropy": "test_ops::test_cross_entropy",
    "Linear": "test_layers::test_linear_forward_and_gradients", "Erf": "test_layers::test_erf_gradients",
    "GELU": "test_layers::test_gelu_forward_and_gradients",
    "GELUGrad": "test_layers::test_gelu_forward_and_gradients",
    "Embedding": "test_layers::test_embedding_forward_and_repeated_ids_gradient",
    "EmbeddingGrad": "test_layers::test_embedding_forward_and_repeated_ids_gradient",
    "LSTMSequence": "test_lstm::test_lstm_sequence_gradients",
    "Im2col": "test_conv::test_im2col_col2im_gradcheck_and_gradgradcheck",
    "Col2im": "test_conv::test_im2col_col2im_gradcheck_and_gradgradcheck",
    "Im2colLayout": "test_conv::test_fast_im2col_col2im_layouts_gradcheck",
    "Col2imLayout": "test_conv::test_fast_im2col_col2im_layouts_gradcheck",
    "Conv2d": "test_conv::test_conv2d_gradcheck", "MaxPool2dTiled": "test_conv::test_pooling_gradcheck",
    "_TiledGather": "test_conv::test_tiled_max_pool_matches_composed_oracle",
    "_TiledScatter": "test_conv::test_tiled_max_pool_matches_composed_oracle",
    # the fast kernels (minimm.functional.fast), each also tested against its readable twin
    "Conv2dCHWN": "test_fast_conv::test_conv2d_chwn_gradcheck_and_gradgradcheck",
    "MaxPool2dCHWN": "test_fast_conv::test_max_pool_chwn_matches_numpy_and_gradchecks",
    "Conv2dReLUMaxPool": "test_fast_conv::test_fused_conv_relu_pool_matches_numpy_and_gradchecks",
    "EmbeddingFast": "test_fast_layers::test_fast_embedding_gradient_sums_repeated_ids_as_add_at",
    "BatchNorm2dFast": "test_fast_layers::test_fast_batch_norm_gradcheck_and_gradgradcheck",
    "LSTMFast": "test_fast_recurrent::test_fast_lstm_gradcheck_and_gradgradcheck",
    "MultiHeadAttentionFast": "test_fast_attention::test_fused_mha_function_gradcheck_and_gradgradcheck",
    "RoundSTE": "test_compress::test_round_ste_forward_rounds_and_backward_is_the_identity",
    "FastSoftmax": "test_attention::test_masked_softmax_grad_and_gradgrad",
    "Softplus": "test_ops::test_unary_forward_and_grad",
    # a dtype conversion: float64 finite differences cannot see it; its tests pin the dtypes
    "_Cast": "test_autograd::test_float64_array_operand_promotes_forward_but_not_the_leaf_gradient",
    "_Accumulate": "test_autograd::test_accumulate_forward_gradcheck_and_gradgradcheck",
}
ABSTRACT = {"_Binary"}  # a base class with no forward of its own


def _all_functions(cls=Function):
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_functions(sub)


def test_every_function_names_its_gradient_test():
    names = {f.__name__ for f in _all_functions() if f.__module__.startswith("minimm.")}
    missing = sorted(names - set(GRADCHECKED_BY) - ABSTRACT)
    assert not missing, f"Functions without a listed gradient test: {missing}"


def test_every_listed_test_exists():
    for function, where in GRADCHECKED_BY.items():
        module, test = where.split("::")
        assert hasattr(importlib.import_module(module), test), f"{function}: no {where}"
