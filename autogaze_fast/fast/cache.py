"""Static (preallocated) decoder state for the fast gaze loop, gpt-fast style.

One buffer per layer for keys and values, one key-valid mask, a fill length, and the bookkeeping
the upstream semantics need between frames (the last step's tokens, which upstream runs through
the decoder only at the next frame's prefill, and the running count of attendable positions that
gives cumulative-sum RoPE positions). Nothing is copied per step: a call writes its keys and
values in place at ``[length, length + L)``.
"""

from __future__ import annotations

import torch


class StaticKVCache:
    """Keys/values (num_layers, B, Hkv, capacity, D), key-valid mask (B, capacity) and fill length.

    ``capacity`` grows (one copy, doubling) only if a streaming run outgrows its first estimate.
    """

    def __init__(self, num_layers: int, batch: int, kv_heads: int, head_dim: int, capacity: int,
                 dtype: torch.dtype, device: torch.device | str) -> None:
        shape = (num_layers, batch, kv_heads, capacity, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.key_valid = torch.zeros(batch, capacity, dtype=torch.bool, device=device)
        self.length = 0

    @property
    def capacity(self) -> int:
        return self.keys.shape[3]

    def reserve(self, extra: int) -> None:
        """Make room for ``extra`` more positions."""
        need = self.length + extra
        if need <= self.capacity:
            return
        new_capacity = max(need, 2 * self.capacity)
        grow = new_capacity - self.capacity
        pad = self.keys.new_zeros(self.keys.shape[:3] + (grow, self.keys.shape[4]))
        self.keys = torch.cat([self.keys, pad], dim=3)
        self.values = torch.cat([self.values, pad], dim=3)
        self.key_valid = torch.cat([self.key_valid, self.key_valid.new_zeros(self.key_valid.shape[0], grow)], dim=1)


class FastDecodeState:
    """Everything the fast loop carries from one frame (or streaming call) to the next.

    Attributes:
        cache: the static KV cache.
        pending_ids: (B, n) the previous frame's last-step tokens, not yet in the cache, or None.
        valid_count: (B,) number of attendable positions in the cache (vision tokens and non-eos
            gaze tokens); the next prefill's RoPE positions continue from it.
        conv_values: the vision stem's per-block temporal caches.
    """

    def __init__(self, cache: StaticKVCache, batch: int, device) -> None:
        self.cache = cache
        self.pending_ids: torch.Tensor | None = None
        self.valid_count = torch.zeros(batch, dtype=torch.long, device=device)
        self.conv_values: list[torch.Tensor] | None = None
        self.graphs = None  # the graph-ready decode's buffers and CUDA graphs (fast/graphed.py), if used

    def reset(self) -> None:
        """Start a new clip on the same buffers: empty cache, no pending tokens. Stale keys, values
        and key-valid flags stay past the length, where no query reads them before they are rewritten."""
        self.cache.length = 0
        self.pending_ids = None
        self.valid_count = torch.zeros_like(self.valid_count)
        self.conv_values = None
