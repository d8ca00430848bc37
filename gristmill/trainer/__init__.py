"""The proxy-model trainer: LLaMA-style model, DDP / ZeRO-1/2/3 training loop, memory planner (docs/trainer.md)."""
