"""nanowhale: train small Mixture-of-Experts language models with a C++/CUDA engine."""

import os

# OpenMP threads sleep rather than spin between parallel regions: on small machines a spinning
# thread steals the core that the rest of the step (or another process) needs. Set before the
# extension loads libgomp; an explicit OMP_WAIT_POLICY in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _preload_blas() -> None:
    """Loads scipy-openblas32's library by absolute path, so the extension finds it wherever it sits (its
    RPATH assumes both are in one site-packages: not so in a venv over system packages, or an in-place build)."""
    import ctypes

    try:
        import scipy_openblas32
    except ImportError:
        return
    for lib in sorted(os.listdir(scipy_openblas32.get_lib_dir())):
        if lib.startswith("libscipy_openblas") and ".so" in lib:
            ctypes.CDLL(os.path.join(scipy_openblas32.get_lib_dir(), lib), mode=ctypes.RTLD_GLOBAL)
            return


_preload_blas()

# Attributes load on first use (PEP 562), so `import nanowhale` and commands that only read files (e.g.
# `nanowhale research status`) do not pay for NumPy and the extension.
_LAZY = {
    "nanowhale._C": ("AdamGroup", "Model", "ModelConfig", "Optimizer", "OptimizerConfig", "cuda_available",
                     "get_num_threads", "mpi_available", "op_times", "profile_ops", "reset_op_times",
                     "set_num_threads"),
    "nanowhale.config": ("RunConfig",),
    "nanowhale.loaded": ("LoadedModel", "load"),
    "nanowhale.trainer": ("train",),
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}


def _importing_a_submodule() -> bool:
    """Whether a nanowhale module is being imported right now (its `from nanowhale import x` lands here)."""
    import sys

    return any(getattr(getattr(m, "__spec__", None), "_initializing", False)
               for n, m in list(sys.modules.items()) if n.startswith("nanowhale."))


def __getattr__(name: str):
    import importlib

    module = _WHERE.get(name)
    if module is None:  # a submodule (nw.data.shards, nw.generate, ...), as the eager imports used to provide
        # Not while a submodule is importing: `import nanowhale.checkpoint` asks for nanowhale.safetensors_io
        # here, and importing the trainer then would import the half-made checkpoint module (a cycle).
        if not _importing_a_submodule():
            for eager in ("nanowhale.trainer", "nanowhale.loaded"):
                importlib.import_module(eager)
        if name in globals():
            return globals()[name]
        try:
            return importlib.import_module(f"nanowhale.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"nanowhale.{name}":
                raise
            raise AttributeError(f"module 'nanowhale' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__version__ = "0.1.0"

__all__ = [
    "AdamGroup",
    "LoadedModel",
    "Model",
    "ModelConfig",
    "Optimizer",
    "OptimizerConfig",
    "RunConfig",
    "cuda_available",
    "get_num_threads",
    "load",
    "mpi_available",
    "op_times",
    "profile_ops",
    "reset_op_times",
    "set_num_threads",
    "train",
]
