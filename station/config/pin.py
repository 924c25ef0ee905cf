"""The engineer PIN: PBKDF2 hashes with bounded iterations, so a stored hash never stalls a check."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

# iterations bounded both ways: too few is weak, too many stalls every check_pin (~0.4 s at
# the maximum here); the salt is 16..64 bytes of hex, the digest a sha256 (32 bytes)
PIN_ITERATIONS = 200_000
PIN_MIN_ITERATIONS = 100_000
PIN_MAX_ITERATIONS = 1_000_000
_PIN_RE = re.compile(r"^pbkdf2_sha256\$([1-9][0-9]{0,8})\$((?:[0-9a-f]{2}){16,64})\$([0-9a-f]{64})$")
PIN_UNSET_HELP = ('"" = engineer mode is LOCKED: no PIN set; set one with '
                  "`station set-pin --recipe R`")


def pin_parts(stored: object) -> tuple[int, bytes, str] | None:
    """(iterations, salt, digest hex) of a well-formed stored hash, or None: the one gate both
    the loader and check_pin use, so nothing outside the bounds is ever hashed."""
    if not isinstance(stored, str) or len(stored) > 300:
        return None
    found = _PIN_RE.fullmatch(stored)  # not match: "$" would allow a trailing newline
    if not found:
        return None
    iterations = int(found.group(1))
    if not PIN_MIN_ITERATIONS <= iterations <= PIN_MAX_ITERATIONS:
        return None
    return iterations, bytes.fromhex(found.group(2)), found.group(3)


MIN_PIN_LENGTH = 4


def pin_problem(pin: str) -> str:
    """Why ``pin`` cannot be the engineer PIN ('' when it can): the one rule for
    ``station set-pin`` and the window's change-PIN dialog.

    >>> pin_problem("12")
    'the PIN needs at least 4 characters (got 2)'
    """
    if len(pin) < MIN_PIN_LENGTH:
        return f"the PIN needs at least {MIN_PIN_LENGTH} characters (got {len(pin)})"
    if pin.strip() != pin:
        return "the PIN must not start or end with a space"
    if any(not ch.isprintable() for ch in pin):
        return "the PIN must be printable characters only"
    return ""


def hash_pin(pin: str, iterations: int = PIN_ITERATIONS) -> str:
    """``pbkdf2_sha256$iterations$salt_hex$hash_hex`` for the recipe's ``engineer.pin_hash``."""
    if len(pin) < MIN_PIN_LENGTH:  # the rest of pin_problem is for what a person types
        raise ValueError(f"engineer PIN: expected at least {MIN_PIN_LENGTH} characters")
    if not PIN_MIN_ITERATIONS <= iterations <= PIN_MAX_ITERATIONS:
        raise ValueError(f"engineer PIN: iterations {iterations}: expected between "
                         f"{PIN_MIN_ITERATIONS} and {PIN_MAX_ITERATIONS}")
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", pin.encode("utf-8", "surrogatepass"), salt, iterations)
    return f"pbkdf2_sha256${iterations}${salt.hex()}${digest.hex()}"


def check_pin(pin: str, stored: str) -> bool:
    """True when ``pin`` matches the stored hash (constant-time). Never raises and never runs
    more than PIN_MAX_ITERATIONS: an empty, malformed or out-of-bounds ``stored`` never matches
    (``engineer.locked`` tells 'no PIN set' apart)."""
    parts = pin_parts(stored)
    if parts is None or not isinstance(pin, str) or len(pin) > 1024:
        return False
    iterations, salt, expected = parts
    digest = hashlib.pbkdf2_hmac("sha256", pin.encode("utf-8", "surrogatepass"), salt, iterations)
    return hmac.compare_digest(digest.hex(), expected)
