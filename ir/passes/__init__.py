"""Graph passes: pure functions Graph -> PassResult."""

from convstudio.ir.passes.base import PassResult, run_pipeline

__all__ = ["PassResult", "run_pipeline"]
