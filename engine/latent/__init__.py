"""The latent space: the projection schedule and losses (``projector``), members'
projections stepping together (``batch``), edits and morph weights (``edits``), attribute
directions (``directions``) and how they are learned (``learn``), and the kept face, W+
with its noise maps (``kept``).

May import: ``engine.model``, ``engine.face`` and ``engine.protocol``.
"""
