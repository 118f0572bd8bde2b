"""What the heuristics share: per-cell statistics of a per-pixel map, the fixed coarse-to-fine
pattern, and the rule that picks cells (and their scale) from a change map.

**The fixed pattern** (``uniform``, and every heuristic's first frame): every cell of the coarsest
scale, then every cell of the next, and so on until the budget runs out; the scale that is only
partly filled gets cells spread over the frame in a fixed low-discrepancy order (:func:`spread_order`).

**The change rule** (``frame-difference``, ``motion-vectors``): from a frame's per-pixel change map
(e.g. mean |Δ| against the previous frame), each cell's score is the map's mean over the cell and
its change mass that mean times its area. Going from the finest scale to the coarsest, the rule
takes the first scale at which the fewest cells holding ``coverage`` (default 90 %) of the
frame's change mass fit in the budget: concentrated change stays at the finest scale, change
spread over the frame (a pan, a scene cut) moves to a coarse scale, where one token covers what
many fine ones would. Whatever budget is left goes to the finest scale's cells not yet taken, by
score, ties in the spread order (and once every finest cell is taken, the next scale's). A frame
without change thus gets fine cells in the spread order.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from autogaze_fast.selectors.layout import GazeLayout


def _halton(i: int, base: int) -> float:
    f, r = 1.0, 0.0
    while i > 0:
        f /= base
        r += f * (i % base)
        i //= base
    return r


@functools.lru_cache(maxsize=64)
def spread_order(grid: int) -> tuple[int, ...]:
    """Every cell of a ``grid × grid`` grid (row-major index) once, in an order that spreads any
    prefix over the frame: the cells hit by the Halton (2, 3) points, first hit first (cells never
    hit within ``64 · grid²`` points follow in row-major order)."""
    seen: dict[int, None] = {}
    i = 1
    while len(seen) < grid * grid and i <= 64 * grid * grid:
        x, y = _halton(i, 2), _halton(i, 3)
        seen.setdefault(min(int(y * grid), grid - 1) * grid + min(int(x * grid), grid - 1))
        i += 1
    for k in range(grid * grid):
        seen.setdefault(k)
    return tuple(seen)


def spread_rank(grid: int) -> torch.Tensor:
    """``(grid²,)`` long: each cell's place in :func:`spread_order`."""
    order = torch.tensor(spread_order(grid))
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel())
    return rank


def uniform_mask(layout: GazeLayout, budget: int) -> torch.Tensor:
    """``(N,)`` bool: the fixed coarse-to-fine pattern of ``budget`` tokens (see the module docstring)."""
    mask = torch.zeros(layout.num_tokens, dtype=torch.bool)
    left = min(int(budget), layout.num_tokens)
    for offset, grid in zip(layout.offsets, layout.grids):
        take = min(left, grid * grid)
        mask[offset + torch.tensor(spread_order(grid)[:take], dtype=torch.long)] = True
        left -= take
        if not left:
            break
    return mask


def cell_means(maps: torch.Tensor, layout: GazeLayout) -> list[torch.Tensor]:
    """Mean of per-pixel maps over every cell of every scale.

    Args:
        maps: ``(F, S, S)`` float, one map per frame, at the layout's largest side ``S``.
    Returns:
        per scale ``(F, g_s²)`` float (row-major cells).
    """
    if maps.dim() != 3 or maps.shape[-2:] != (layout.side, layout.side):
        raise ValueError(f"change maps must be (F, {layout.side}, {layout.side}), got {tuple(maps.shape)}")
    return [F.adaptive_avg_pool2d(maps[:, None].float(), g).flatten(1) for g in layout.grids]


def choose_by_change(scores: list[torch.Tensor], layout: GazeLayout, budget: int, coverage: float = 0.9,
                     fill: bool = True) -> torch.Tensor:
    """The change rule (module docstring) for one frame.

    Args:
        scores: per scale ``(g_s²,)`` mean change of each cell (>= 0; 0 = no change).
        budget: most tokens to keep.
        coverage: fraction of the frame's change mass the chosen scale's cells must hold, in (0, 1].
        fill: spend what is left of the budget on the finest scale (else keep only changed cells).
    Returns:
        ``(N,)`` bool.
    """
    mask = torch.zeros(layout.num_tokens, dtype=torch.bool)
    budget = min(int(budget), layout.num_tokens)
    chosen = None
    for s in reversed(range(len(layout.scales))):
        mass = scores[s].double()  # equal areas within a scale: the mean ranks as the mass does
        total = float(mass.sum())
        if total <= 0:
            chosen = (s, torch.zeros(0, dtype=torch.long))
            break
        values, order = mass.sort(descending=True, stable=True)
        need = int(torch.searchsorted(values.cumsum(0), coverage * total * (1 - 1e-12))) + 1
        need = min(need, int((values > 0).sum()))
        if need <= budget:
            chosen = (s, order[:need])
            break
    if chosen is None:  # even the coarsest scale's cells do not fit: its best cells
        s = 0
        chosen = (0, scores[0].double().sort(descending=True, stable=True).indices[:budget])
    s, cells = chosen
    mask[layout.offsets[s] + cells] = True
    left = budget - int(cells.numel())
    for fine in reversed(range(len(layout.scales))):  # the finest scale first; coarser ones once it is full
        if left <= 0:
            break
        score = scores[fine].double()
        start = layout.offsets[fine]
        free = ~mask[start:start + layout.tokens_per_scale[fine]]
        if not fill:
            free &= score > 0
        if not bool(free.any()):
            continue
        # score first (descending), the spread order breaking ties; taken cells last
        order = _lexsort(torch.where(free, -score, torch.tensor(float("inf"), dtype=score.dtype)),
                         spread_rank(layout.grids[fine]))
        take = order[:min(left, int(free.sum()))]
        mask[start + take] = True
        left -= int(take.numel())
    return mask


def _lexsort(primary: torch.Tensor, secondary: torch.Tensor) -> torch.Tensor:
    """Indices sorting by ``primary`` ascending, ties by ``secondary`` ascending."""
    first = torch.argsort(secondary, stable=True)
    return first[torch.argsort(primary[first], stable=True)]
