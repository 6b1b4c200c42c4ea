"""How a session was authenticated, as RFC 8176 ``amr`` values, kept in ``Session.data``.

The OpenID Provider's ID tokens carry ``amr`` (SPEC §7.3: ``pwd``, plus ``otp``/``hwk``/``mfa``
after a second factor). The session's level says how many factors, not which, so each
factor records its method here when it is passed:

- a password sign-in: ``pwd`` (no key written: a session without the key reads as this);
- a passkey sign-in: ``hwk`` (proof of possession of a hardware-bound key); when the
  authenticator verified the user (UV, a PIN or a biometric) and ``passkey_uv_two_factor``
  counts that as two factors, ``hwk user mfa``: RFC 8176 has no value for "PIN or biometric,
  whichever the authenticator used", so ``user`` (the user, not only a key, was there) marks
  the second factor and ``mfa`` says there were two;
- a second factor adds its method and ``mfa``: TOTP ``otp``, a WebAuthn security key ``hwk``
  (``pwd otp mfa``, ``pwd hwk mfa``, ``hwk otp mfa`` after a one-factor passkey).

A level-2 session without the key (made before this was recorded) reads as ``pwd mfa``, what
was issued before: never more than the session can prove.
"""

from __future__ import annotations

from collections.abc import Mapping

#: The ``Session.data`` key: the methods, space-separated, in the order they were used.
AMR_KEY = "amr"
PWD = "pwd"  # noqa: S105 - an RFC 8176 method name, not a secret
OTP = "otp"
HARDWARE_KEY = "hwk"
USER = "user"
MFA = "mfa"


def passkey(two_factors: bool) -> dict[str, str]:
    """The session data of a passkey sign-in (``two_factors``: UV counted as a second one)."""
    methods = (HARDWARE_KEY, USER, MFA) if two_factors else (HARDWARE_KEY,)
    return {AMR_KEY: " ".join(methods)}


def after_second_factor(data: Mapping[str, str], level: int, method: str) -> dict[str, str]:
    """The session data change once the second factor ``method`` (``otp``, ``hwk``) passed,
    for a session whose ``data`` and ``level`` are the ones before it."""
    methods = [m for m in of_session(data, level) if m != MFA]
    return {AMR_KEY: " ".join(dict.fromkeys([*methods, method, MFA]))}


def of_session(data: Mapping[str, str], level: int) -> tuple[str, ...]:
    """The ``amr`` of a session with ``data`` at ``level``."""
    recorded = tuple(data.get(AMR_KEY, "").split())
    if recorded:
        return recorded
    return (PWD, MFA) if level >= 2 else (PWD,)
