"""The generator and everything about model files, with no notion of faces or jobs.

Owns: the StyleGAN2 networks (``networks``, ``modconv``), reading and writing checkpoints
safely (``checkpoints``, ``safe_pickle``, ``psp`` for e4e/pSp, ``fetch``), the encoder
network (``encoder``), drawing seeds (``sampling``), the DCGAN teacher (``teacher``), the
process's torch settings (``runtime``), images as arrays and files (``images``) and the
embedded model's weights (``weights/``).

May import: torch, numpy, Pillow, safetensors, and ``engine.protocol``. Nothing above it.
"""
