"""PyTorch backend: lowering a design to torch.fx, standalone code generation, training."""

from convstudio.backends.torch.lower import lower, params_from_module, unwrap

__all__ = ["lower", "params_from_module", "unwrap"]
