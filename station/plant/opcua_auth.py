"""Who may talk to the station's OPC UA server, and over what channel.

Anonymous, unencrypted access is the default and is only allowed on a loopback endpoint (a PLC
program or a bridge on this machine). Anything else needs ``opcua.username`` with
``opcua.password_hash`` (the engineer PIN's PBKDF2 format, :mod:`station.config.pin`), and
``opcua.security = "Basic256Sha256"`` signs and encrypts the channel with the recipe's
certificate and private key (the password then never crosses the wire in clear).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
from dataclasses import dataclass
from typing import Any

from asyncua import Server, ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager
from cryptography import x509

from station.config.pin import check_pin

log = logging.getLogger(__name__)

DEFAULT_PORT = 4840
MAX_CREDENTIAL = 1024  # longer user names or passwords are refused without hashing them


class OpcUaStartError(OSError):
    """The server cannot serve the recipe's [opcua] section (a setting, a port in use, an
    unreadable key): one line naming the key, its value and why."""


@dataclass(frozen=True)
class Listen:
    """Where the server listens and what it advertises."""

    host: str
    port: int
    path: str
    loopback: bool

    def url(self, port: int | None = None) -> str:
        """The endpoint URL, with ``port`` (the one really bound) when given."""
        return f"opc.tcp://{self.host}:{self.port if port is None else port}{self.path}"


_ENDPOINT = re.compile(r"opc\.tcp://([^\s/:@]+)(?::(\d{1,5}))?(/\S*)?")


def parse_endpoint(endpoint: str) -> Listen:
    """``opc.tcp://HOST:PORT/PATH`` -> where to listen; port 0 = any free port (tests, bench)."""
    found = _ENDPOINT.fullmatch(endpoint) if isinstance(endpoint, str) else None
    port = int(found.group(2)) if found and found.group(2) else DEFAULT_PORT
    if found is None or port > 65535:
        raise OpcUaStartError(f"opcua.endpoint = {endpoint!r}: expected "
                               "opc.tcp://HOST:PORT/PATH (e.g. opc.tcp://127.0.0.1:4840/station)")
    host = found.group(1)
    return Listen(host, port, found.group(3) or "", _is_loopback(host))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(info[4][0]).is_loopback
                       for info in socket.getaddrinfo(host, None))
        except (OSError, ValueError):
            return False


def check_settings(settings: Any) -> Listen:
    """The recipe's [opcua] section, checked for what serving it needs; raises
    :class:`OpcUaStartError` with the key at fault."""
    listen = parse_endpoint(settings.endpoint)
    if not listen.loopback and not settings.username:
        raise OpcUaStartError(
            f"opcua.endpoint = {settings.endpoint!r}: anonymous access is only served on "
            "loopback (127.0.0.1); set opcua.username and opcua.password_hash to open it to "
            "the plant network")
    if bool(settings.username) != bool(settings.password_hash):
        raise OpcUaStartError("opcua.username / opcua.password_hash: expected both, or "
                               "neither (anonymous)")
    if settings.security not in ("none", "Basic256Sha256"):
        raise OpcUaStartError(f"opcua.security = {settings.security!r}: expected 'none' or "
                               "'Basic256Sha256'")
    if settings.security == "Basic256Sha256" and not (settings.certificate
                                                      and settings.private_key):
        raise OpcUaStartError("opcua.security = 'Basic256Sha256': expected "
                               "opcua.certificate and opcua.private_key")
    return listen


class StationUsers(UserManager):
    """asyncua's user manager: anonymous when no user is configured, else the one user whose
    password matches the stored hash. A refused login is ``None`` (BadUserAccessDenied)."""

    def __init__(self, username: str = "", password_hash: str = "") -> None:
        self.username = username
        self.password_hash = password_hash
        self.refused = 0

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        if not self.username:
            return User(role=UserRole.User)
        if (isinstance(username, str) and isinstance(password, str)
                and len(username) <= MAX_CREDENTIAL and len(password) <= MAX_CREDENTIAL
                and username == self.username and check_pin(password, self.password_hash)):
            return User(role=UserRole.User, name=username)
        self.refused += 1
        log.warning("OPC UA login refused for user %r", (username or "")[:80])
        return None


def certificate_uri(path: str) -> str | None:
    """The application URI in a certificate's subjectAltName (what clients check), if any."""
    try:
        with open(path, "rb") as file:
            data = file.read()
        cert = (x509.load_pem_x509_certificate(data) if data.lstrip().startswith(b"-----")
                else x509.load_der_x509_certificate(data))
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


async def configure_security(server: Server, settings: Any) -> None:
    """Policies, identity tokens and (for Basic256Sha256) the certificate and key."""
    if settings.security == "Basic256Sha256":
        try:
            await server.load_certificate(settings.certificate)
        except Exception as exc:
            raise OpcUaStartError(f"opcua.certificate = {settings.certificate!r}: cannot "
                                   f"load it: {exc}") from exc
        try:
            await server.load_private_key(settings.private_key)
        except Exception as exc:
            raise OpcUaStartError(f"opcua.private_key = {settings.private_key!r}: cannot "
                                   f"load it: {exc}") from exc
        uri = certificate_uri(settings.certificate)
        if uri:
            await server.set_application_uri(uri)
        server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
    else:
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    server.set_identity_tokens([ua.UserNameIdentityToken] if settings.username
                               else [ua.AnonymousIdentityToken])
