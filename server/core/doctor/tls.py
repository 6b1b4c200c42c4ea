"""The portal's certificate, judged: trusted, names that cover the hosts, dates. Pure: the
certificate and the verification error come from :meth:`net.Client.peer_certificate`."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import Sequence

from cryptography import x509

from server.core.doctor.check import Check
from server.core.doctor.check import fail
from server.core.doctor.check import ok
from server.core.doctor.check import warn

#: A certificate that ends sooner than this is a warning.
EXPIRY_WARNING = dt.timedelta(days=14)

#: OpenSSL verify codes (``X509_V_ERR_*``) told apart in the report.
_EXPIRED = 10
_NOT_YET_VALID = 9
_HOSTNAME_MISMATCH = 62


def names_of(cert: x509.Certificate) -> list[str]:
    """The DNS names and IP addresses in the subject alternative names (lowercase)."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    names: list[str] = [n.lower() for n in ext.value.get_values_for_type(x509.DNSName)]
    names += [str(a) for a in ext.value.get_values_for_type(x509.IPAddress)]
    return names


def covers(names: Sequence[str], host: str) -> bool:
    """True when a SAN matches ``host`` (a wildcard stands for exactly one leftmost label,
    as browsers match, RFC 6125 §6.4.3)."""
    host = host.lower().rstrip(".")
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        ip = None
    for name in names:
        if ip is not None:
            if name == str(ip):
                return True
            continue
        if name == host:
            return True
        if name.startswith("*.") and "." in host and host.split(".", 1)[1] == name[2:]:
            return True
    return False


def trust_check(name: str, host: str, error: ssl.SSLError | None, ca_file: str | None) -> Check:
    """Whether the chain verifies for ``host`` (with the system's CAs, or ``--ca``)."""
    if error is None:
        source = f"the CA in {ca_file}" if ca_file else "the system's trusted CAs"
        return ok(name, f"the certificate of {host} verifies with {source}")
    code = getattr(error, "verify_code", None)
    message = getattr(error, "verify_message", None) or str(error)
    if code in (_EXPIRED, _NOT_YET_VALID, _HOSTNAME_MISMATCH):
        # reported by the date and name checks with their own fixes
        return ok(name, f"the chain of {host} is trusted apart from: {message}")
    fix = (
        "serve a certificate from a CA that browsers trust (e.g. Let's Encrypt) with its full "
        "chain; for a private CA (such as `authctl cert generate --ca`), install ca.pem on "
        "every client and run doctor with --ca FILE"
    )
    if ca_file:
        fix = f"the certificate is not signed by {ca_file}: serve the right certificate or chain"
    return fail(name, f"the certificate of {host} is not trusted: {message}", fix)


def names_check(
    name: str, cert: x509.Certificate, portal_host: str, other_hosts: Sequence[str]
) -> list[Check]:
    """The SANs cover the portal host (fail) and the cookie domain's hosts (warn)."""
    names = names_of(cert)
    shown = ", ".join(names) or "none"
    fix_hosts = "issue a certificate whose subject alternative names include {}"
    if not covers(names, portal_host):
        return [
            fail(
                name,
                f"the certificate does not name the portal host {portal_host} (it names: {shown})",
                fix_hosts.format(portal_host),
            )
        ]
    missing = [h for h in dict.fromkeys(other_hosts) if not covers(names, h)]
    if missing:
        return [
            warn(
                name,
                f"the certificate names {portal_host} but not {', '.join(missing)} "
                f"(it names: {shown})",
                fix_hosts.format(", ".join(missing))
                + ", or serve those hosts with certificates of their own",
            )
        ]
    return [ok(name, f"the certificate names {portal_host}" + (
        f" and {', '.join(dict.fromkeys(other_hosts))}" if other_hosts else ""))]  # fmt: skip


def expiry_check(name: str, cert: x509.Certificate, now: dt.datetime) -> Check:
    """Not yet valid or expired: fail; ending within :data:`EXPIRY_WARNING`: warn."""
    start = cert.not_valid_before_utc
    end = cert.not_valid_after_utc
    renew = "renew the certificate (or let your ACME client do it) and reload the proxy"
    if now < start:
        return fail(
            name,
            f"the certificate is valid only from {start:%Y-%m-%d %H:%M} UTC",
            "check this machine's clock, or issue a certificate valid now",
        )
    if now >= end:
        return fail(name, f"the certificate expired on {end:%Y-%m-%d %H:%M} UTC", renew)
    left = end - now
    if left < EXPIRY_WARNING:
        return warn(
            name,
            f"the certificate expires on {end:%Y-%m-%d %H:%M} UTC, in {left.days} days",
            renew,
        )
    return ok(name, f"valid until {end:%Y-%m-%d} ({left.days} days)")
