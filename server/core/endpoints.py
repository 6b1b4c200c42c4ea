"""Every HTTP path authctl serves, in one place (SPEC §3).

The web tier routes these paths, the proxy snippets point proxies at them and the CLI names
them in messages: they are interfaces, so they are spelt once, here.
"""

from __future__ import annotations

#: Prefix of every API path; the portal's pages are everything else.
API_PREFIX = "/api/"

# --------------------------------------------------------------------------- authorization

#: Traefik, Caddy: the target in ``X-Forwarded-Proto``/``-Host``/``-Uri``; redirects to log in.
FORWARD_AUTH = "/api/authz/forward-auth"
#: nginx ``auth_request``, HAProxy: the target in ``X-Original-URL``; 401 to log in.
AUTH_REQUEST = "/api/authz/auth-request"
#: Envoy ``ext_authz``: the original path and query follow this prefix.
EXT_AUTHZ = "/api/authz/ext-authz"
#: Authelia's legacy endpoint (``rd``, ``auth=basic``).
LEGACY_VERIFY = "/api/verify"
#: The four authorization endpoints, as proxies call them.
AUTHZ = (FORWARD_AUTH, AUTH_REQUEST, EXT_AUTHZ, LEGACY_VERIFY)

# --------------------------------------------------------------------------- portal API

HEALTH = "/api/health"
STATE = "/api/state"
CONFIGURATION = "/api/configuration"
PASSWORD_POLICY = "/api/configuration/password-policy"  # noqa: S105 - a path
USER_INFO = "/api/user/info"
FIRST_FACTOR = "/api/firstfactor"
LOGOUT = "/api/logout"
SECOND_FACTOR_TOTP = "/api/secondfactor/totp"
TOTP_REGISTER = "/api/secondfactor/totp/register"
TOTP_REGISTER_QR = "/api/secondfactor/totp/register/qr.svg"
SESSION_ELEVATION = "/api/user/session/elevation"
RESET_START = "/api/reset-password/identity/start"
RESET_FINISH = "/api/reset-password/identity/finish"
RESET_PASSWORD = "/api/reset-password"  # noqa: S105 - a path
CHANGE_PASSWORD = "/api/change-password"  # noqa: S105 - a path
#: Passkeys and security keys (SPEC §7.1); ``{id}`` is a path parameter (``server.web.routes``).
USER_INFO_2FA_METHOD = "/api/user/info/2fa_method"
SECOND_FACTOR_WEBAUTHN = "/api/secondfactor/webauthn"
FIRST_FACTOR_PASSKEY = "/api/firstfactor/passkey"
WEBAUTHN_CREDENTIALS = "/api/secondfactor/webauthn/credentials"
WEBAUTHN_REGISTER = "/api/secondfactor/webauthn/credential/register"
WEBAUTHN_CREDENTIAL = "/api/secondfactor/webauthn/credential/{id}"
#: The signed-in user's sessions (SPEC §7.6); ``{handle}``: one of them.
USER_SESSIONS = "/api/user/sessions"
USER_SESSION = "/api/user/sessions/{handle}"
#: The signed-in user's personal access tokens (SPEC §7.6); ``{id}``: one of them.
USER_TOKENS = "/api/user/tokens"
USER_TOKEN = "/api/user/tokens/{id}"  # noqa: S105 - a path

#: The OpenID Connect provider (SPEC §7.3, Authelia's paths); served only when it is enabled.
OIDC_DISCOVERY = "/.well-known/openid-configuration"
OIDC_OAUTH_METADATA = "/.well-known/oauth-authorization-server"
OIDC_JWKS = "/jwks.json"
OIDC_AUTHORIZATION = "/api/oidc/authorization"
OIDC_TOKEN = "/api/oidc/token"  # noqa: S105 - a path
OIDC_USERINFO = "/api/oidc/userinfo"
OIDC_INTROSPECTION = "/api/oidc/introspection"
OIDC_REVOCATION = "/api/oidc/revocation"
OIDC_CONSENT_API = "/api/oidc/consent"
OIDC_CONSENT_PAGE = "/consent"
OIDC_API = (
    OIDC_AUTHORIZATION, OIDC_TOKEN, OIDC_USERINFO, OIDC_INTROSPECTION, OIDC_REVOCATION,
    OIDC_CONSENT_API,
)  # fmt: skip

#: Every API path but the authorization endpoints.
PORTAL_API = (
    HEALTH, STATE, CONFIGURATION, PASSWORD_POLICY, USER_INFO, FIRST_FACTOR, LOGOUT,
    SECOND_FACTOR_TOTP, TOTP_REGISTER, TOTP_REGISTER_QR, SESSION_ELEVATION, RESET_START,
    RESET_FINISH, RESET_PASSWORD, CHANGE_PASSWORD,
    USER_SESSIONS, USER_SESSION,
    USER_TOKENS, USER_TOKEN,
    USER_INFO_2FA_METHOD, SECOND_FACTOR_WEBAUTHN, FIRST_FACTOR_PASSKEY, WEBAUTHN_CREDENTIALS,
    WEBAUTHN_REGISTER, WEBAUTHN_CREDENTIAL,
)  # fmt: skip
