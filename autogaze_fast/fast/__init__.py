"""The fast AutoGaze: static-cache decode loop and Triton kernels (torch twins on CPU)."""
