"""The engine's entry points: the command line (``commands`` with ``tools``) and the one
door the bot may use (``entry``: the composed ``wspace`` command and the local engine
process). The demo's photos live in ``assets/``.

May import: everything below it.
"""
