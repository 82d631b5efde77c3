"""Lean forwards over Hugging Face weights for model families whose shape we know."""

from engine.fastpath.llama import LlamaFastForward, StepInterrupted, fast_forward_for

__all__ = ["LlamaFastForward", "StepInterrupted", "fast_forward_for"]
