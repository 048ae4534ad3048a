"""Running jobs for members: the scheduler that batches several jobs in one thread and
gives each its turn (``scheduler``), stop requests (``stops``), and the two worker kinds:
the local engine process (``worker``) and the Redis worker (``redis_worker``).

May import: everything below it (``jobs``, ``latent``, ``face``, ``model``, ``protocol``).
"""
