"""The web tier: the WSGI app (``make_app``), the authz endpoints on the raw environ, the
portal and self-service APIs on webob, and the portal's static assets. It builds on
``server.core``.
"""
