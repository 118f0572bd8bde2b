"""The fast AutoGaze: static-cache decode loop and gazed SigLIP on the Triton kernels (CUDA), on
fused torch attention on plain CPU (each kernel file of :mod:`autogaze_fast.kernels` says what runs where)."""
