"""nanowhale: train small Mixture-of-Experts language models with a C++/CUDA engine."""

from nanowhale._C import (
    AdamGroup,
    Model,
    ModelConfig,
    Optimizer,
    OptimizerConfig,
    cuda_available,
    get_num_threads,
    set_num_threads,
)

__version__ = "0.1.0"

__all__ = [
    "AdamGroup",
    "Model",
    "ModelConfig",
    "Optimizer",
    "OptimizerConfig",
    "cuda_available",
    "get_num_threads",
    "set_num_threads",
]
