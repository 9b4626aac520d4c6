"""What the compute libraries allocate beside the tensors PyTorch's dispatcher sees.

Both functions take one traced convolution (:class:`~snugtune.memory.trace.ConvCall`) and
return the bytes the library holds *during* that call on top of the call's outputs, which the
tracker already counts. They are replayed as an allocation right after the outputs and freed
right after.

* CPU, oneDNN (``mkldnn_convolution``, PyTorch's CPU convolution for float, bf16 and fp16):
  measured with ``torch.profiler(profile_memory=True)`` on an AVX-512 EPYC with PyTorch 2.14
  (the model's CPU predictions against profiled peaks, oneDNN's buffers included:
  ``benchmarks/results/planner_accuracy.json``, ``cpu``, from ``benchmarks/planner_accuracy.py``;
  the single-call readings behind the factors below are not recorded in a committed JSON).
  For NCHW tensors oneDNN reorders the input into a channel-blocked layout (not when a regular
  convolution has fewer input channels than the block), reorders the weight, computes a
  blocked output and copies it back; the weight gradient is computed blocked and reordered.
  Channels-last tensors skip the activation reorders but the weight is still reordered (twice
  in the weight-gradient pass). Channels are padded to the SIMD block (16 floats on AVX-512, 8
  on AVX2).
* CUDA, cuDNN: a workspace allocated through the caching allocator for the chosen algorithm
  (:func:`cudnn_workspace_bytes`).
"""

from __future__ import annotations

import math

import torch

from snugtune.memory.trace import ConvCall

__all__ = [
    "DEPTHWISE_WGRAD_CHUNKS",
    "cudnn_workspace_bytes",
    "onednn_block",
    "onednn_conv_extra_bytes",
]

# oneDNN's channels-last depthwise weight-gradient kernel keeps this many fp32 partial weight
# gradients (read off the profiler for 3x3 and 7x7 kernels, batch 2 to 32; that reading is
# not recorded in a committed JSON).
DEPTHWISE_WGRAD_CHUNKS = 256


def onednn_block() -> int:
    """Channel block of oneDNN's blocked layouts on this CPU: 16 with AVX-512, else 8."""
    cap = str(torch.backends.cpu.get_cpu_capability()).upper()
    return 16 if "AVX512" in cap else 8


def _pad(c: int, block: int) -> int:
    return block * math.ceil(c / block)


def _numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def onednn_conv_extra_bytes(call: ConvCall, block: int) -> int:
    """Bytes oneDNN holds during one CPU convolution beyond the outputs the tracker counts.

    Args:
        call: the traced convolution (shapes NCHW-ordered; ``channels_last`` when the kernel
            sees NHWC strides, e.g. after a permute, and skips the activation reorders).
        block: channel block (:func:`onednn_block`).
    """
    item = call.itemsize
    c_in, c_out = call.input_shape[1], call.weight_shape[0]
    depthwise = call.groups > 1
    x = _numel(call.input_shape) * item
    y = _numel(call.output_shape) * item
    w_pad = _pad(c_out, block) * _pad(call.weight_shape[1], block) if not depthwise else _pad(c_out, block)
    w_r = w_pad * _numel(call.weight_shape[2:]) * item  # reordered (padded) weight
    # bf16/fp16 weight gradients are accumulated in an fp32 buffer (taken as 2.2x the
    # low-precision padded weight, from profiler readings that no committed JSON records)
    # before the down-cast
    acc = (22 * w_r) // 10 if call.backward and item == 2 else 0
    if call.channels_last:
        if not call.backward:
            return w_r  # the reordered weight
        # wgrad: blocked weight gradient + its reorder; depthwise kernels also reduce partial
        # fp32 weight gradients over ``DEPTHWISE_WGRAD_CHUNKS`` chunks (any batch and size),
        # plus as many in the low-precision dtype for bf16/fp16
        per_chunk = 4 + (item if item < 4 else 0)
        chunks = DEPTHWISE_WGRAD_CHUNKS * _numel(call.weight_shape) * per_chunk if depthwise else 0
        return max(2 * w_r, acc) + chunks
    reorder_src = depthwise or c_in >= block
    x_r = x * _pad(c_in, block) // c_in if reorder_src else 0
    if call.backward:
        # output-grad and input reorders feeding the weight gradient (with the fp32
        # accumulator), or the blocked weight gradient beside its plain copy; depthwise
        # kernels reduce partial weight gradients over 8 chunks
        g = _numel(call.output_shape) * item
        chunks = 8 * _numel(call.weight_shape) * 4 if depthwise else 0
        return max(g + x_r + acc, w_r) + chunks
    # reordered input, reordered weight and blocked output live together, then the blocked
    # output is copied into the plain one the tracker counts
    y_b = y * _pad(c_out, block) // c_out
    return max(x_r + w_r + y_b - y, y_b)


def cudnn_workspace_bytes(call: ConvCall) -> int:
    """cuDNN workspace held during one convolution on CUDA.

    The backward pass of a dense convolution with a spatial kernel (k > 1, one group) runs
    algorithms that transform the input and the output gradient into scratch space
    (Winograd, FFT and tiled implicit-GEMM engines: Lavin & Gray 2016, "Fast Algorithms for
    Convolutional Neural Networks"; cuDNN's developer guide lists their workspace as growing
    with the tensor sizes), so the workspace is modelled as the bytes of the input plus the
    output gradient. Forward passes, 1x1 and grouped/depthwise convolutions use kernels that
    need (almost) none. With this term the calibration set's large-convolution rows
    (repvgg, darknet, mobilenetv4 at batch 64-128) stop being under-predicted (their errors
    with it: benchmarks/results/planner_accuracy.json, ``calibration.rows``, from
    benchmarks/planner_accuracy.py; the errors without it are not recorded in a committed JSON).

    This is what the step needs, not what it may take: PyTorch's cuDNN path
    (``aten/src/ATen/native/cudnn/Conv_v8.cpp``) runs the heuristics' plans in order and moves
    to the next one when a workspace allocation raises ``OutOfMemoryError``, so on a card with
    free memory a convolution can hold gigabytes more (the calibration set's dm_nfnet_f2,
    focalnet and xception65 readings: 5-8 GiB above the prediction at one batch, close to it
    at the next larger one; ``measured_bytes`` less ``predicted_peak_bytes`` of the rows
    flagged "free memory taken" in benchmarks/results/planner_accuracy.json,
    ``calibration.rows``), and under the guard's cap it falls back to a leaner plan.
    """
    if not call.backward or call.groups != 1 or max(call.weight_shape[2:], default=1) <= 1:
        return 0
    return (_numel(call.input_shape) + _numel(call.output_shape)) * call.itemsize
