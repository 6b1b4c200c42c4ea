"""The serving tier: the waitress server with authctl's settings, the inline authz path, the
SIGTERM drain and the ``--workers`` supervisor. It runs ``server.web``'s app.
"""
