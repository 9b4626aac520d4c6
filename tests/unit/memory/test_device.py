"""Device model arithmetic: allocator rounding, segments, splitting, caps; profiles; backends."""

from __future__ import annotations

from dataclasses import replace

import pytest

from snugtune.errors import ConfigError
from snugtune.memory.allocator import (
    CachingAllocatorModel,
    OutOfMemory,
    round_size,
    segment_size,
)
from snugtune.memory.backends import onednn_conv_extra_bytes
from snugtune.memory.device import CUBLAS_HANDLES, context_bytes, needed_bytes, replay
from snugtune.memory.gpus import CUBLAS_WORKSPACE_BYTES, PROFILES, get_gpu_profile
from snugtune.memory.trace import ALLOC, CONV, FREE, MARK, Category, ConvCall, StorageInfo, Trace

MIB = 1 << 20


def test_round_size_and_segment_size():
    assert round_size(1) == 512
    assert round_size(512) == 512
    assert round_size(513) == 1024
    assert segment_size(round_size(100)) == 2 * MIB  # small pool
    assert segment_size(1 * MIB) == 2 * MIB  # 1 MiB is still "small"
    assert segment_size(1 * MIB + 512) == 20 * MIB  # 1-10 MiB share 20 MiB segments
    assert segment_size(10 * MIB) == 10 * MIB  # large: rounded to 2 MiB
    assert segment_size(15 * MIB + 1) == 16 * MIB


def test_small_requests_pack_into_one_segment():
    a = CachingAllocatorModel()
    for i in range(4000):  # 4000 x 512 B = ~1.95 MiB, one 2 MiB segment
        a.malloc(i, 100)
    assert a.reserved == 2 * MIB and a.segments == 1
    a.malloc(9999, 600 * 1024)  # no room left: second small segment
    assert a.reserved == 4 * MIB


def test_split_reuse_and_merge():
    a = CachingAllocatorModel()
    a.malloc(1, 3 * MIB)  # 20 MiB segment, split: 17 MiB free remainder
    a.malloc(2, 15 * MIB)  # served from the remainder, no new segment
    assert a.reserved == 20 * MIB
    a.free(1)
    a.free(2)  # everything merges back into one 20 MiB free block
    a.malloc(3, 18 * MIB)  # fits the merged block; the 2 MiB rest is split off
    assert a.reserved == 20 * MIB and a.allocated == 18 * MIB
    a.malloc(4, 19 * MIB)  # a 19 MiB rest would be needed: new segment
    assert a.reserved == 40 * MIB


def test_large_pool_keeps_remainders_over_1mib_only():
    a = CachingAllocatorModel()
    a.malloc(1, 11 * MIB)  # 12 MiB segment; 1 MiB rest is not > 1 MiB: not split
    assert a.allocated == 12 * MIB


def test_fragmentation_grows_reserved_and_cap_releases_cache():
    free = CachingAllocatorModel()
    free.malloc(1, 60 * MIB)
    free.free(1)
    free.malloc(2, 70 * MIB)  # the cached 60 MiB block is too small: new segment
    assert free.reserved == 130 * MIB and free.peak_reserved == 130 * MIB
    capped = CachingAllocatorModel(limit=100 * MIB)
    capped.malloc(1, 60 * MIB)
    capped.free(1)
    capped.malloc(2, 70 * MIB)  # over the cap: the free 60 MiB segment is released first
    assert capped.reserved == 70 * MIB
    with pytest.raises(OutOfMemory):
        capped.malloc(3, 40 * MIB)


def test_profiles():
    for name in ("generic", "a100-40gb", "h100-80gb", "t4-16gb", "rtx2070-8gb", "gtx1650-4gb"):
        p = PROFILES[name]
        assert 0 < p.context_bytes < 1 << 30 and p.source
        assert p.memory_bytes is None or p.context_bytes < p.memory_bytes
    # the generic context is the largest of the single-card ones: a plan for an unknown card
    assert PROFILES["generic"].context_bytes == max(p.context_bytes for p in PROFILES.values())
    assert get_gpu_profile("A100-40GB").bf16 and not get_gpu_profile("t4-16gb").bf16
    assert get_gpu_profile("h100-80gb").cublas_workspace_bytes == 32 * MIB
    assert get_gpu_profile("auto") == PROFILES["generic"]
    with pytest.raises(ConfigError, match="a100-40gb"):
        get_gpu_profile("nope")


def test_conv_kernels_are_added_only_for_convolution_networks_and_probed_contexts():
    conv = ConvCall(backward=False, input_shape=(1, 8, 8, 8), weight_shape=(8, 8, 3, 3),
                    output_shape=(1, 8, 8, 8), itemsize=4, groups=1, stride=(1, 1),
                    dilation=(1, 1))
    convnet = Trace(events=(), infos=(), labels=("train.forward",), convs=(conv,) * 5)
    transformer = replace(convnet, convs=(conv,))  # a patch embedding only
    probed = replace(PROFILES["t4-16gb"], conv_kernels_bytes=128 * MIB)
    assert context_bytes(convnet, PROFILES["t4-16gb"]) == PROFILES["t4-16gb"].context_bytes
    assert context_bytes(convnet, probed) == probed.context_bytes + 128 * MIB
    assert context_bytes(transformer, probed) == probed.context_bytes


def _trace(events, convs=()):
    infos = tuple(StorageInfo(Category.ACTIVATIONS, "m", "cpu") for _ in range(10))
    return Trace(events=tuple(events), infos=infos, labels=("train", "eval"), convs=tuple(convs))


def test_replay_cuda_adds_context_cublas_and_segments():
    gpu = get_gpu_profile("a100-40gb")
    t = _trace([(MARK, 0, 0), (ALLOC, 0, 30 * MIB), (FREE, 0, 30 * MIB), (MARK, 1, 0),
                (ALLOC, 1, 1000)])
    est = replay(t, "cuda", gpu)
    cublas = CUBLAS_HANDLES * CUBLAS_WORKSPACE_BYTES
    assert est.tensor_peak_bytes == 30 * MIB + cublas
    # two 8.125 MiB workspaces share one 20 MiB segment; 30 MiB own segment; 2 MiB small
    assert est.reserved_bytes == 20 * MIB + 30 * MIB + 2 * MIB
    assert est.predicted_peak_bytes == gpu.context_bytes + est.reserved_bytes
    assert est.eval_peak_bytes == 1000 + cublas
    assert replay(t, "cuda", gpu, budget=gpu.context_bytes + 40 * MIB).oom
    assert not replay(t, "cuda", gpu, budget=est.predicted_peak_bytes).oom


def test_replay_cpu_adds_onednn_reorders_at_convolutions():
    call = ConvCall(backward=False, input_shape=(8, 512, 14, 14), weight_shape=(512, 512, 3, 3),
                    output_shape=(8, 512, 14, 14), itemsize=4, groups=1, stride=(1, 1),
                    dilation=(1, 1))
    x = 8 * 512 * 14 * 14 * 4
    w = 512 * 512 * 9 * 4
    # measured (profiler, AVX-512): input reorder + weight reorder + blocked output, beside the
    # plain output the tracker counts
    assert onednn_conv_extra_bytes(call, 16) == x + w
    nhwc = replace(call, channels_last=True)
    assert onednn_conv_extra_bytes(nhwc, 16) == w
    # channels-last depthwise weight gradients: 256 fp32 partial weight gradients
    dw = replace(nhwc, backward=True, weight_shape=(512, 1, 7, 7), groups=512)
    assert onednn_conv_extra_bytes(dw, 16) >= 256 * 512 * 49 * 4
    t = _trace([(ALLOC, 0, x), (ALLOC, 1, x), (CONV, 0, 0)], [call])
    assert replay(t, "cpu").tensor_peak_bytes == 2 * x + onednn_conv_extra_bytes(call, replay_block())


def replay_block() -> int:
    from snugtune.memory.backends import onednn_block

    return onednn_block()


def test_needed_bytes_is_below_the_uncapped_peak_when_the_cache_can_be_released():
    gpu = get_gpu_profile("t4-16gb")
    # 60 MiB freed, then 70 MiB: uncapped, the cached 60 MiB segment stays (130 MiB reserved);
    # capped, the allocator releases it and 70 MiB is enough
    t = _trace([(MARK, 0, 0), (ALLOC, 0, 60 * MIB), (FREE, 0, 60 * MIB), (ALLOC, 1, 70 * MIB)])
    free = replay(t, "cuda", gpu)
    need = needed_bytes(t, "cuda", gpu)
    cublas = CUBLAS_HANDLES * CUBLAS_WORKSPACE_BYTES
    assert free.predicted_peak_bytes - need >= 60 * MIB - 1 * MIB
    assert not replay(t, "cuda", gpu, budget=need).oom
    assert replay(t, "cuda", gpu, budget=need - 2 * MIB).oom
    assert need >= gpu.context_bytes + 70 * MIB + cublas
    assert needed_bytes(t, "cpu") == replay(t, "cpu").predicted_peak_bytes
