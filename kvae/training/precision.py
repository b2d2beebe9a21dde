"""`train.precision = "auto"`: bfloat16 compute where this machine has bfloat16 matrix units, float32 elsewhere.

A mixed bfloat16 policy (Keras's `mixed_bfloat16`: float32 weights and
optimizer state, bfloat16 layer compute, kvae's losses in float32) pays on
hardware that multiplies bfloat16 natively: on the CPU, Intel's AMX tiles or
AVX-512 BF16 (oneDNN uses them for torch's bfloat16 matmuls and
convolutions: 960 GFLOP/s against 140 for float32 on one core of the
development machine, `benchmarks/step_speedups.py`); on a GPU, Ampere and
newer. Elsewhere bfloat16 is emulated and slower than float32, so "auto"
asks the backend before choosing. The check is a torch-only fast path: on
jax or tensorflow "auto" is float32, the portable choice.
"""

import keras

POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")
CHOICES = ("auto",) + POLICIES


def fast_bfloat16():
    """Whether the torch backend multiplies bfloat16 natively here (CUDA with bf16, or a CPU with AMX / AVX-512 BF16)."""
    if keras.backend.backend() != "torch":
        return False
    import torch

    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    return bool(cpu_has("amx_bf16") or cpu_has("avx512_bf16"))


def cpu_has(feature):
    """Whether torch's own CPUID query (what its kernels dispatch on) reports `feature` (False where it cannot say).

    torch 2.13 answers with a dict of features (`torch._C._cpu._get_cpu_capability()`); torch 2.1-2.12 had one
    function per feature (`_is_amx_tile_supported`, `_is_avx512_bf16_supported`)."""
    import torch

    cpu = getattr(torch._C, "_cpu", None)
    capability = getattr(cpu, "_get_cpu_capability", None)
    found = capability() if capability is not None else None
    if isinstance(found, dict):
        return bool(found.get(feature, False))
    old = {"amx_bf16": "_is_amx_tile_supported", "avx512_bf16": "_is_avx512_bf16_supported"}.get(feature)
    check = getattr(cpu, old, None) if old else None
    return bool(check()) if check is not None else False


def resolve_precision(precision):
    """The Keras dtype policy name for `train.precision` (`"auto"`: `mixed_bfloat16` where `fast_bfloat16()`)."""
    if precision == "auto":
        return "mixed_bfloat16" if fast_bfloat16() else "float32"
    return precision
