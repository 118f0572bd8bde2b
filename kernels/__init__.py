"""Hand-written Triton kernels, one file per kernel family, each with its CPU paths and its torch twin.

Installed as ``autogaze_fast.kernels``. Every launcher picks its path per call with
:func:`autogaze_fast.kernels.dispatch.use_triton`: CUDA tensors run the Triton kernels, and so do
CPU tensors under ``TRITON_INTERPRET=1`` (through Triton's interpreter); plain CPU tensors run the
family's torch path, which is not always its twin:

* family 1, :mod:`.gathered_patch_embed`: the torch twin (gather the gazed patches, one GEMM) is
  the CPU path; the backward is torch on every device.
* family 2, :mod:`.decode_attention`: inference runs one fused attention call with an additive
  mask (``cpu_attention_bias`` + ``fused_cpu_attention``); training runs ``prefill_attention_torch``
  (one fused causal call) under autograd. The split-walk twin (``decode_attention_torch`` with
  ``num_splits``) is only the kernels' oracle.
* family 3, :mod:`.sparse_attention`: inference runs fused attention per frame span (or per
  512-token chunk); training runs per-span flash attention (``CpuFlashSpanAttention``). The twin
  (``backend="torch"`` under autograd: fp32 chunks by hand) is only the kernels' oracle.

Each kernel file's docstring says what runs on CUDA, on CPU and under autograd.
"""
