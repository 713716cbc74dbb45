"""The model layer: corpus, tokenizer, training, sampling, import, and the worker thread."""

import functools
import os


@functools.cache
def cpu_info() -> str:
    """The start of /proc/cpuinfo (the first processor: vendor, flags); empty where there is none."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            return f.read(8192)
    except OSError:
        return ""


def _prefer_mkl_avx2_on_amd() -> None:
    """Intel MKL (torch's CPU matrix library) takes a slow generic path on AMD processors; its AVX2 path makes
    sampling about 2x faster there (bench/sampling.py). MKL reads MKL_CBWR at its first use, so setting it here,
    before any matrix product, is enough; a value the user set is kept."""
    cpu = cpu_info()
    if "AuthenticAMD" in cpu and " avx2" in cpu:
        os.environ.setdefault("MKL_CBWR", "AVX2")


_prefer_mkl_avx2_on_amd()
