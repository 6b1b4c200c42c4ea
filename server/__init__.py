"""authctl's server package: the pure core (config, users, rules, ...) and the WSGI app.

Importing the package imports nothing else, so the CLI can load one module at a time.
"""
