"""The gazed-ViT core and one small adapter per vision family.

The core: multi-scale gathered patch embedding, per-scale positions, prefix tokens, sparse attention.
"""
