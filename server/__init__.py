"""authctl's server package, in three tiers: ``server.core`` (pure logic and storage),
``server.web`` (the WSGI app) and ``server.serve`` (waitress and the worker supervisor).

Importing the package imports nothing else, so the CLI can load one module at a time.
"""
