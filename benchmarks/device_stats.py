"""Device measurements for bench_train_gpu.py: synchronisation, peak matmul throughput, memory in use."""

import statistics
import time

try:
    import torch
except ImportError:
    torch = None


def synchronize(device):
    """Waits for all queued GPU work of this process (cudaDeviceSynchronize: every stream, so nanowhale's
    kernels too, as both engines share the device's primary context). No-op on CPU or without torch."""
    if device == "cuda" and torch is not None and torch.cuda.is_available():
        torch.cuda.synchronize()


def device_name(device):
    if device == "cuda" and torch is not None and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return "cpu"


def peak_matmul_flops(device, n=None, reps=10):
    """Measured dense matmul throughput, FLOP/s (median of `reps` timed n^3 matmuls after 3 warmups):
    bf16 on CUDA (n=8192), fp32 on CPU (n=1024). Returns (flops, label)."""
    if torch is None:
        return None, "n/a (no torch)"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    n = n or (8192 if device == "cuda" else 1024)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    times = []
    for i in range(3 + reps):
        synchronize(device)
        t0 = time.perf_counter()
        a @ b
        synchronize(device)
        if i >= 3:
            times.append(time.perf_counter() - t0)
    del a, b
    if device == "cuda":
        torch.cuda.empty_cache()
    label = f"{str(dtype).removeprefix('torch.')} {n}^3 matmul, median of {reps}"
    return 2.0 * n**3 / statistics.median(times), label


class DeviceMemory:
    """Device memory taken by an engine that does not allocate through torch (nanowhale): the drop in
    free memory (torch.cuda.mem_get_info) from `start()` to the lowest value seen by `sample()`. Sampled
    between steps, so a transient in-step peak that the engine frees again before the step ends is missed;
    memory held by torch's own cache is emptied at `start()` so it does not count."""

    def __init__(self, device):
        self.enabled = device == "cuda" and torch is not None and torch.cuda.is_available()
        self.free0 = self.min_free = None

    def start(self):
        if self.enabled:
            synchronize("cuda")
            torch.cuda.empty_cache()
            self.free0 = self.min_free = torch.cuda.mem_get_info()[0]

    def sample(self):
        if self.enabled and self.free0 is not None:
            self.min_free = min(self.min_free, torch.cuda.mem_get_info()[0])

    def peak_bytes(self):
        return None if not self.enabled or self.free0 is None else self.free0 - self.min_free


class TorchMemory:
    """Peak of torch's caching allocator (torch.cuda.max_memory_allocated) since `start()`."""

    def __init__(self, device):
        self.enabled = device == "cuda" and torch is not None and torch.cuda.is_available()

    def start(self):
        if self.enabled:
            synchronize("cuda")
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def sample(self):
        pass

    def peak_bytes(self):
        return torch.cuda.max_memory_allocated() if self.enabled else None
