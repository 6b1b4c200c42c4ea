"""authctl as an OpenID Provider (SPEC §7.3): keys, tokens, the code flow and claims.

Pure logic on top of :mod:`server.core.storage` (codes, tokens, consents and subject ids live
there, in both engines); the HTTP side is ``server.web.oidc_api``. JOSE (JWS, JWK, JWT) is
joserfc's; PKCE's S256 transform is Authlib's. Nothing here signs or verifies by hand.
"""
