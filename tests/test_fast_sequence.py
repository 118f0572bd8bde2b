"""The fast teacher-forced decoder pass's pieces against their plain-autograd equivalents."""

import pytest
import torch

from autogaze_fast.fast.decoder import RopeTables
from autogaze_fast.fast.sequence import RopeAttention
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
