"""Hand-written Triton kernels, one file per kernel family, each beside its torch twin.

Installed as ``autogaze_fast.kernels``. Every launcher dispatches with
:func:`autogaze_fast.kernels.dispatch.use_triton`: CUDA tensors run the Triton kernel, CPU
tensors run the torch twin unless ``TRITON_INTERPRET=1`` (then the Triton kernel runs on CPU
through Triton's interpreter).
"""
