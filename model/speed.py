"""Speed on the hardware at hand: the number format sampling and training use, int8 weights, a fused GELU.

Sampling reads every weight once per new token, so on a CPU it runs at the speed of memory: a 124M model is
500 MB of float32 weights a token. bfloat16 halves that, but only CPUs that compute in it natively (AVX512-BF16,
AMX) gain from it: elsewhere (AVX2) torch converts every product and bfloat16 is slower than float32. int8
weights (dynamic quantisation, fbgemm: weights int8 per output channel, activations quantised per product)
quarter the traffic on any x86 CPU and keep the held-out perplexity within 2% (bench/quality.py). Training
computes in float32 except where bfloat16 is native (a GPU, AVX512-BF16, AMX): it is compute-bound, and
emulated bfloat16 only adds conversions.
"""

import ctypes
import functools
import gc
import warnings

import torch
from transformers.activations import ACT2FN, NewGELUActivation
from transformers.pytorch_utils import Conv1D

from model import cpu_info
from model.errors import ModelError

SAMPLE_DTYPES = ("auto", "float32", "bfloat16", "int8")
TRAIN_DTYPES = ("auto", "float32", "bfloat16")


@functools.cache
def cpu_has_native_bf16() -> bool:
    """x86 CPUs that multiply bfloat16 in hardware (AVX512-BF16 or AMX); False elsewhere or when unknown."""
    flags = next((line for line in cpu_info().splitlines() if line.startswith("flags")), "").split()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def int8_supported() -> bool:
    """Dynamic int8 quantisation runs here: an x86 build of torch (fbgemm) with the eager quantisation API."""
    return "fbgemm" in torch.backends.quantized.supported_engines and hasattr(torch.ao.quantization, "quantize_dynamic")


def sample_dtype(name: str, device: torch.device) -> str:
    """The number format sampling uses on `device`; "auto" picks the fastest that keeps quality."""
    if name not in SAMPLE_DTYPES:
        raise ModelError(f"Unknown sampling dtype {name!r}: one of {', '.join(SAMPLE_DTYPES)}.")
    if name == "int8" and (device.type != "cpu" or not int8_supported()):
        raise ModelError(f"int8 sampling needs an x86 CPU build of torch (not {device}); use auto, float32 or "
                         "bfloat16.")
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bfloat16"
    if device.type == "cpu" and int8_supported():
        return "int8"
    return "float32"


def train_autocast(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype training uses on `device` (None: plain float32). "auto": bfloat16 on CUDA GPUs that
    have it (float16 with loss scaling on older ones) and on CPUs with native bfloat16, else float32."""
    if name not in TRAIN_DTYPES:
        raise ModelError(f"Unknown training dtype {name!r}: one of {', '.join(TRAIN_DTYPES)}.")
    if name == "float32":
        return None
    if device.type == "cuda":
        return torch.bfloat16 if name == "bfloat16" or torch.cuda.is_bf16_supported() else torch.float16
    if name == "bfloat16" or (device.type == "cpu" and cpu_has_native_bf16()):
        return torch.bfloat16
    return None


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """Every linear layer of a float32 CPU model (GPT-2's Conv1D ones and the LM head) as dynamic int8, in place.
    The embeddings and layer norms stay float32, copied out of the loaded file's memory map so that it can go.
    For sampling only: the result cannot be trained or saved as a run."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Conv1D):
                setattr(parent, name, _as_linear(child))
    qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch >= 2.10 points to torchao for new code; this API still works
        torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear: qconfig}, dtype=torch.qint8, inplace=True)
    for param in model.parameters():
        param.data = param.data.clone()
    gc.collect()
    _return_freed_memory()
    return model


def _as_linear(conv: Conv1D) -> torch.nn.Linear:
    """GPT-2's Conv1D (x @ W + b, W stored inputs x outputs) as the same nn.Linear (W stored outputs x inputs),
    sharing its weights (a transposed view: quantising copies them) but not its bias (the int8 layer keeps that)."""
    n_in, n_out = conv.weight.shape
    linear = torch.nn.Linear(n_in, n_out, device="meta")
    linear.weight = torch.nn.Parameter(conv.weight.detach().t(), requires_grad=False)
    linear.bias = torch.nn.Parameter(conv.bias.detach().clone(), requires_grad=False)
    return linear


def _return_freed_memory() -> None:
    """Hand memory the C allocator keeps after big frees back to the system (glibc's malloc_trim), so that
    resident memory shows what the model holds. Does nothing where there is no glibc."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def fuse_gelu(model: torch.nn.Module) -> torch.nn.Module:
    """GPT-2's GELU (tanh approximation, seven elementwise ops in transformers) as torch's one fused kernel for the
    same function, in place: training keeps 750 MB less for the backward pass at 1 x 1024 tokens (124M)."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, NewGELUActivation):
                setattr(parent, name, ACT2FN["gelu_pytorch_tanh"])
    return model
