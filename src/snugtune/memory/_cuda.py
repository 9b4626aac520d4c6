"""CUDA semantics while simulating on (fake) CPU tensors: autocast's op lists, SDPA's kernel.

A simulation runs on fake CPU tensors (the autograd engine cannot run fake CUDA tensors
without a GPU), under CPU autocast. Two things differ on CUDA in ways that change memory:

Attention. ``F.scaled_dot_product_attention`` with an attention mask (relative-position
biases, as in timm's ``vit_relpos_*``) runs the math kernel on the CPU, which saves the
(B, heads, N, N) attention matrix for backward; on CUDA the memory-efficient kernel (and flash
attention in half precision on sm80+) saves only the output and a (B, heads, N) log-sum-exp.
Under CUDA semantics SDPA calls ``aten._scaled_dot_product_efficient_attention`` whenever CUDA
would pick a fused kernel (head dim a multiple of 4 in fp32 or 8 in half precision, no GQA):
the same saved tensors as flash attention up to the log-sum-exp's padding. Source:
``aten/src/ATen/native/transformers/cuda/sdp_utils.cpp`` (backend selection and checks).

Autocast. CPU and CUDA autocast agree on what runs in low precision CPU and CUDA autocast agree on what runs in low precision
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

__all__ = ["CudaSemantics"]

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


class CudaSemantics(TorchFunctionMode):
    """Apply CUDA's SDPA kernel choice and autocast lists on top of CPU autocast.

    Args:
        dtype: the autocast dtype (bf16 or fp16); its lists apply only while CPU autocast is on.
    """

    def __init__(self, dtype: torch.dtype | None) -> None:
        super().__init__()
        self.dtype = dtype

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = dict(kwargs or {})
        if func is F.scaled_dot_product_attention:
            return _sdpa(*args, **kwargs)
        if self.dtype is None or not torch.is_autocast_enabled("cpu"):
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
        if isinstance(x, torch.Tensor) and x.dtype == torch.float32 and self.dtype is not None:
            return x.to(self.dtype)
        return x


def _sdpa(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` as CUDA would run it (see the module docstring)."""
    if torch.is_autocast_enabled("cpu"):  # SDPA is on autocast's low-precision list
        low = torch.get_autocast_dtype("cpu")
        query, key, value = (t.to(low) if t.dtype == torch.float32 else t for t in (query, key, value))
    align = 4 if query.dtype == torch.float32 else 8
    fused = (
        not enable_gqa
        and query.dim() == 4
        and key.dim() == 4
        and query.dtype in (torch.float32, torch.float16, torch.bfloat16)
        and query.size(-1) % align == 0
        and value.size(-1) % align == 0
        and not (is_causal and attn_mask is not None)
    )
    if not fused:
        return F.scaled_dot_product_attention(
            query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
            scale=scale, enable_gqa=enable_gqa)
    bias = None
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            bias = torch.zeros(attn_mask.shape, dtype=query.dtype, device=query.device)
            bias = bias.masked_fill(attn_mask.logical_not(), float("-inf"))
        else:
            bias = attn_mask.to(query.dtype)
        bias = bias.expand(query.size(0), query.size(1), query.size(2), key.size(2))
    need_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (query, key, value) if isinstance(t, torch.Tensor))
    out = torch.ops.aten._scaled_dot_product_efficient_attention(
        query, key, value, bias, need_grad, dropout_p, is_causal, scale=scale)
    return out[0]
