"""The face engine, grouped by job; each layer imports only the ones below it:

- ``protocol``: the contract with the bot (requests, events, errors, the wire); no torch;
- ``model``: the generator, model files, images;
- ``face`` and ``latent``: a member's photo and faces; the latent space, projection, edits;
- ``jobs``: the Engine, handlers, dispatch: serving one request;
- ``serving``: the scheduler and the two worker kinds;
- ``cli``: the command line and ``cli.entry``, the one door the bot uses besides the protocol.
"""
