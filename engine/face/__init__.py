"""A member's photo and the faces in it: decoding uploads safely (``containers`` strips
their metadata first), finding and aligning faces, likeness (``align``), and attribute
labels (``labels``).

May import: ``engine.model`` and ``engine.protocol``. Never ``latent``, ``jobs`` or above.
"""
