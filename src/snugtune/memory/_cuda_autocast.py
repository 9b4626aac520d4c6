"""CUDA autocast's op lists, applied while simulating on (fake) CPU tensors.

A simulation runs on fake CPU tensors (the autograd engine cannot run fake CUDA tensors
without a GPU), under CPU autocast. CPU and CUDA autocast agree on what runs in low precision
(convolutions, matmuls, linear) but CUDA also forces fp32 for normalisations, softmax and
pointwise transcendental ops, which changes activation bytes of transformers (layer norm and
attention-softmax outputs are fp32 on CUDA, bf16 on CPU). This ``TorchFunctionMode`` sits above
autograd, so its casts are recorded in the graph exactly like autocast's own.

Source: ``aten/src/ATen/autocast_mode.cpp`` (PyTorch 2.x), ``TORCH_LIBRARY_IMPL(aten,
Autocast, m)``: the ``fp32`` list (cast inputs to fp32) and the ``fp32_set_opt_dtype`` list
(compute in fp32 when no dtype is given); and the CUDA-only lower-precision ops (einsum, mv,
addmv, addr, chain_matmul, linalg_multi_dot) that CPU autocast leaves alone.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_map

__all__ = ["CudaAutocastPolicy"]

_T = torch.Tensor


def _named(owner: Any, names: str) -> set[Any]:
    return {getattr(owner, n) for n in names.split() if hasattr(owner, n)}


# fp32 policy: every floating input is cast to fp32 (CUDA autocast "fp32" list).
_FP32 = (
    _named(torch, "acos asin cosh erfinv exp expm1 log log10 log2 log1p reciprocal rsqrt sinh tan "
           "pow layer_norm group_norm frobenius_norm nuclear_norm cosine_similarity "
           "poisson_nll_loss cosine_embedding_loss hinge_embedding_loss kl_div "
           "margin_ranking_loss triplet_margin_loss binary_cross_entropy_with_logits dist "
           "pdist cdist renorm logsumexp")
    | _named(_T, "acos asin cosh erfinv exp expm1 log log10 log2 log1p reciprocal rsqrt sinh "
             "tan pow __pow__ __rpow__ logsumexp renorm dist")
    | _named(F, "layer_norm group_norm softplus cosine_similarity poisson_nll_loss "
             "cosine_embedding_loss nll_loss hinge_embedding_loss kl_div l1_loss "
             "smooth_l1_loss huber_loss mse_loss margin_ranking_loss multilabel_margin_loss "
             "soft_margin_loss triplet_margin_loss multi_margin_loss "
             "binary_cross_entropy_with_logits pdist interpolate upsample "
             "upsample_nearest upsample_bilinear")
)
# fp32_set_opt_dtype policy: low-precision inputs are reduced in fp32 (output dtype fp32).
_FP32_OUT = _named(torch, "softmax log_softmax cumprod cumsum prod sum") | _named(
    _T, "softmax log_softmax cumprod cumsum prod sum"
) | _named(F, "softmax log_softmax")
# Low precision on CUDA only (CPU autocast already covers conv/matmul/linear/bmm/addmm/sdpa).
_LOW = _named(torch, "einsum mv addmv addr chain_matmul") | _named(_T, "mv addmv addr")


class CudaAutocastPolicy(TorchFunctionMode):
    """Apply CUDA autocast's fp32 and extra low-precision lists on top of CPU autocast.

    Args:
        dtype: the autocast dtype (bf16 or fp16).
    """

    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.dtype = dtype

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = dict(kwargs or {})
        if not torch.is_autocast_enabled("cpu"):
            return func(*args, **kwargs)
        if func in _FP32:
            args, kwargs = tree_map(self._up, (args, kwargs))
        elif func in _FP32_OUT:
            if "dtype" not in kwargs and any(self._is_low(a) for a in args[:1]):
                kwargs["dtype"] = torch.float32
        elif func in _LOW:
            args, kwargs = tree_map(self._down, (args, kwargs))
        return func(*args, **kwargs)

    def _is_low(self, x: Any) -> bool:
        return isinstance(x, torch.Tensor) and x.dtype in (torch.float16, torch.bfloat16)

    def _up(self, x: Any) -> Any:
        return x.float() if self._is_low(x) else x

    def _down(self, x: Any) -> Any:
        if isinstance(x, torch.Tensor) and x.dtype == torch.float32:
            return x.to(self.dtype)
        return x
