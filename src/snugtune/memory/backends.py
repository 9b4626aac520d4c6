"""What the compute libraries allocate beside the tensors PyTorch's dispatcher sees.

Both functions take one traced convolution (:class:`~snugtune.memory.trace.ConvCall`) and
return the bytes the library holds *during* that call on top of the call's outputs, which the
tracker already counts. They are replayed as an allocation right after the outputs and freed
right after.

* CPU, oneDNN (``mkldnn_convolution``, PyTorch's CPU convolution for float, bf16 and fp16):
  measured with ``torch.profiler(profile_memory=True)`` on an AVX-512 EPYC with PyTorch 2.14
  (see ``tests/unit/memory/test_backends.py``). For NCHW tensors oneDNN reorders the input into a
  channel-blocked layout (not when a regular convolution has fewer input channels than the
  block), reorders the weight, computes a blocked output and copies it back; the weight
  gradient is computed blocked and reordered. Channels-last tensors skip the activation
  reorders but the weight is still reordered (twice in the weight-gradient pass). Channels are
  padded to the SIMD block (16 floats on AVX-512, 8 on AVX2).
* CUDA, cuDNN: a workspace allocated through the caching allocator for the chosen algorithm.
"""

from __future__ import annotations

import math

import torch

from snugtune.memory.trace import ConvCall

__all__ = ["cudnn_workspace_bytes", "onednn_block", "onednn_conv_extra_bytes"]


def onednn_block() -> int:
    """Channel block of oneDNN's blocked layouts on this CPU: 16 with AVX-512, else 8."""
    cap = str(torch.backends.cpu.get_cpu_capability()).upper()
    return 16 if "AVX512" in cap else 8


def _pad(c: int, block: int) -> int:
    return block * math.ceil(c / block)


def _numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def onednn_conv_extra_bytes(call: ConvCall, block: int, channels_last: bool) -> int:
    """Bytes oneDNN holds during one CPU convolution beyond the outputs the tracker counts.

    Args:
        call: the traced convolution (shapes NCHW-ordered).
        block: channel block (:func:`onednn_block`).
        channels_last: whether activations are NHWC (no activation reorders then).
    """
    item = call.itemsize
    c_in, c_out = call.input_shape[1], call.weight_shape[0]
    depthwise = call.groups > 1
    x = _numel(call.input_shape) * item
    y = _numel(call.output_shape) * item
    w_pad = _pad(c_out, block) * _pad(call.weight_shape[1], block) if not depthwise else _pad(c_out, block)
    w_r = w_pad * _numel(call.weight_shape[2:]) * item  # reordered (padded) weight
    # bf16/fp16 weight gradients are accumulated in an fp32 buffer (~2.2x the low-precision
    # padded weight in the measurements) before the down-cast
    acc = (22 * w_r) // 10 if call.backward and item == 2 else 0
    if channels_last:
        # fwd: reordered weight; wgrad: blocked weight gradient + reorder of it
        return max(2 * w_r, acc) if call.backward else w_r
    reorder_src = depthwise or c_in >= block
    x_r = x * _pad(c_in, block) // c_in if reorder_src else 0
    if call.backward:
        # output-grad and input reorders feeding the weight gradient (with the fp32
        # accumulator), or the blocked weight gradient beside its plain copy
        g = _numel(call.output_shape) * item
        return max(g + x_r + acc, w_r)
    # reordered input, reordered weight and blocked output live together, then the blocked
    # output is copied into the plain one the tracker counts
    y_b = y * _pad(c_out, block) // c_out
    return max(x_r + w_r + y_b - y, y_b)


def cudnn_workspace_bytes(call: ConvCall) -> int:
    """cuDNN workspace held during one convolution on CUDA (see :mod:`.device`)."""
    del call
    return 0
