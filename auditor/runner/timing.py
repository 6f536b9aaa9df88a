"""Where an audit's time goes: seconds per phase, summed over batches, for ``run.json``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch


@dataclass
class Phases:
    """Seconds per phase. On CUDA each phase ends with a synchronisation, so the time of its
    queued kernels is counted in it and not in the next phase that waits for them."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def phase(self, name: str, device: torch.device | None = None) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            if device is not None and device.type == "cuda":
                torch.cuda.synchronize(device)
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

    def rounded(self) -> dict[str, float]:
        return {f"{name}_s": round(value, 3) for name, value in self.seconds.items()}
