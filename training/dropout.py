"""Dropout with a cheaper random mask on CPU, swapped into the Hugging Face backbones
(backbones.fast_modules).

torch's CPU dropout draws one Mersenne-Twister number per element (`bernoulli_`); on the
Transformers4Rec reference setting (XLNet MLM, d_model 64, batch 256 x 20) that was about a third
of a training step. Here each element's keep/drop comes from 16 bits of numpy's PCG64 stream,
several times cheaper per element. Same semantics as nn.Dropout: in training an element is
zeroed with probability p (exactly threshold / 65536, the nearest multiple of 2^-16) and the rest
scaled so the expectation is unchanged; in evaluation it is the identity (the exported scorer
never sees it). The numpy stream is seeded from torch's generator on every call, so `seed`,
resumed runs and per-rank streams behave as they do with torch's dropout. Other devices keep
torch's dropout (their generators are fast and the mask must not cross to the host).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_LEVELS = 1 << 16  # one uint16 per element


class FastDropout(nn.Module):
    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = float(p)
        self.threshold = int(round(self.p * _LEVELS))  # a uint16 below it: dropped
        self.scale = _LEVELS / (_LEVELS - self.threshold) if self.threshold < _LEVELS else 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.threshold == 0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, True)
        seed = int(torch.randint(0, 2**62, (1,)).item())  # torch's stream decides the mask
        bits = np.frombuffer(np.random.Generator(np.random.PCG64(seed)).bytes(2 * x.numel()),
                             dtype=np.uint16).reshape(x.shape)
        # the scaled mask built in numpy, in x's type: one multiply in torch, forward and backward
        mask = torch.from_numpy((bits >= self.threshold) * np.float32(self.scale))
        return x * (mask if x.dtype == torch.float32 else mask.to(x.dtype))

    def extra_repr(self) -> str:
        return f"p={self.p}"

