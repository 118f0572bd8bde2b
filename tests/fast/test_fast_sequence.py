"""The fast teacher-forced decoder pass's pieces against their plain-autograd equivalents."""

import pytest
import torch

from autogaze_fast.fast.decoder import RopeTables
from autogaze_fast.fast.sequence import RopeAttention, rows_attention
from autogaze_fast.kernels.decode_attention import prefill_attention_torch


@pytest.mark.parametrize("heads, kv_heads, pads", [(2, 2, False), (4, 2, True), (4, 1, True)])
def test_rope_attention_equals_rotate_then_attend_under_autograd(torch_twins, heads, kv_heads, pads):
    """Output and the stacked projection's gradient equal RopeTables.rotate + prefill attention
    differentiated by autograd (GQA, key pads that differ per batch row)."""
    g = torch.Generator().manual_seed(0)
    b, n, d = 2, 45, 16
    qkv = torch.randn(b, n, heads + 2 * kv_heads, d, generator=g, requires_grad=True)
    positions = torch.randint(0, 500, (b, n), generator=g).cumsum(-1)
    rope = RopeTables(torch.rand(d // 2, generator=g), positions, qkv.dtype)
    key_valid = torch.rand(b, n, generator=g) > 0.3 if pads else torch.ones(b, n, dtype=torch.bool)
    key_valid[:, 0] = True
    grad_out = torch.randn(b, n, heads, d, generator=g)

    out = RopeAttention.apply(qkv, rope.cos, rope.sin_signed, key_valid, heads, kv_heads)
    (grad,) = torch.autograd.grad(out, qkv, grad_out)

    x = qkv.transpose(1, 2)
    qk = rope.rotate(x[:, :heads + kv_heads])
    want = prefill_attention_torch(qk[:, :heads], qk[:, heads:], x[:, heads + kv_heads:], key_valid).transpose(1, 2)
    (want_grad,) = torch.autograd.grad(want, qkv, grad_out)
    torch.testing.assert_close(out, want, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(grad, want_grad, atol=1e-6, rtol=1e-5)


def test_rope_attention_second_backward_raises_clear_error(torch_twins):
    qkv = torch.randn(1, 8, 3, 8, requires_grad=True)
    rope = RopeTables(torch.rand(4), torch.arange(8)[None], qkv.dtype)
    loss = RopeAttention.apply(qkv, rope.cos, rope.sin_signed, torch.ones(1, 8, dtype=torch.bool), 1, 1).sum()
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="already backpropagated"):
        loss.backward()


@pytest.mark.parametrize("heads, kv_heads", [(2, 2), (4, 2)])
def test_rows_attention_equals_the_full_pass_at_those_rows(torch_twins, heads, kv_heads):
    """The last layer's CPU path (queries at the scored rows only, a boolean map) equals RopeAttention
    read at those rows, output and stacked-projection gradient (GQA, per-row key pads)."""
    g = torch.Generator().manual_seed(1)
    b, n, d = 2, 50, 16
    qkv = torch.randn(b, n, heads + 2 * kv_heads, d, generator=g, requires_grad=True)
    rope = RopeTables(torch.rand(d // 2, generator=g), torch.arange(n)[None].expand(b, -1) * 3, qkv.dtype)
    key_valid = torch.rand(b, n, generator=g) > 0.3
    key_valid[:, 0] = True
    rows = torch.tensor([0, 4, 9, 10, 27, 49])
    grad_out = torch.randn(b, rows.numel(), heads, d, generator=g)
    got = rows_attention(qkv, rope, key_valid, rows, heads, kv_heads)
    (grad,) = torch.autograd.grad(got, qkv, grad_out)
    want = RopeAttention.apply(qkv, rope.cos, rope.sin_signed, key_valid, heads, kv_heads)[:, rows]
    (want_grad,) = torch.autograd.grad(want, qkv, grad_out)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(grad, want_grad, atol=1e-6, rtol=1e-5)


def test_rows_attention_defers_rows_without_keys(torch_twins):
    """A row with no valid key at or before it: None, so the caller's full pass gives it zeros."""
    qkv = torch.randn(1, 6, 3, 8)
    rope = RopeTables(torch.rand(4), torch.arange(6)[None], qkv.dtype)
    key_valid = torch.tensor([[False, False, True, True, True, True]])
    assert rows_attention(qkv, rope, key_valid, torch.tensor([1, 4]), 1, 1) is None
    assert rows_attention(qkv, rope, key_valid, torch.tensor([2, 4]), 1, 1).shape == (1, 2, 1, 8)
