"""Serving one request: the :class:`~engine.jobs.engine.Engine` (a model, its directions and
encoder, drawing and kept faces), the handlers (``handlers``, ``team``), which handler
serves which request (``dispatch``), what a handler asks of the scheduler (``asks``), the
look-alike search (``lookalike``), and one job's answer or failure (``answers``).

May import: ``engine.model``, ``engine.face``, ``engine.latent`` and ``engine.protocol``.
"""
