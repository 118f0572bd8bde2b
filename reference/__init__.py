"""Pure-PyTorch reference of AutoGaze and AutoGaze-SigLIP: the oracle. Installed as ``autogaze_fast.reference``."""
