"""CurveZMQ keys: the broker's and each person's key pair, fingerprints, pinned broker keys.

Keys are CurveZMQ's (RFC 26, Curve25519): 32 octets, written in Z85 (RFC 32) as 40
characters, the form libzmq's ``ZMQ_CURVE_*KEY`` options and ZAP's ``User-Id`` use. Key files
are ZeroMQ's certificate files (ZPL, as ``zmq.auth.create_certificates`` writes them and
``zmq.auth.load_certificate`` reads them): ``NAME.key`` holds the public key, ``NAME.key_secret``
both, readable by its owner only.

A *fingerprint* is what people compare, as SSH shows host keys (RFC 4716's successor in
OpenSSH): ``SHA256:`` and the unpadded base64 of the SHA-256 of the 32 key octets.

:class:`KnownBrokers` pins brokers' keys the way OpenSSH's ``known_hosts`` pins host keys: the
first contact remembers the key, a later different key is a hard error
(:class:`BrokerKeyChanged`), never a silent reconnect.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth

from .errors import BadKey, BrokerKeyChanged, KeyFileError

KEY_BYTES = 32
"""Octets of a Curve25519 key."""

_Z85 = re.compile(r"^[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")
_HEX = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass(frozen=True)
class KeyPair:
    """A CurveZMQ key pair: ``public`` and ``secret``, each 40 characters of Z85 as bytes (the
    form ``zmq.CURVE_PUBLICKEY`` and ``zmq.CURVE_SECRETKEY`` take)."""

    public: bytes
    secret: bytes

    @classmethod
    def generate(cls) -> KeyPair:
        """A new key pair (``zmq.curve_keypair``: libzmq's, from libsodium's randomness)."""
        public, secret = zmq.curve_keypair()
        return cls(public, secret)

    @property
    def public_text(self) -> str:
        """The public key as text (Z85)."""
        return self.public.decode("ascii")

    @property
    def fingerprint(self) -> str:
        """The public key's fingerprint, ``SHA256:...`` (:func:`fingerprint`)."""
        return fingerprint(self.public)

    def __repr__(self) -> str:  # never the secret in a log or a traceback
        return f"KeyPair(public={self.public_text!r})"


def parse_key(text: str | bytes) -> bytes:
    """A public key given as 40 characters of Z85 or 64 hex digits, as Z85 bytes.

    Raises :class:`BadKey` for anything else."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise BadKey(f"not a key: {text[:50]!r}") from None
    text = text.strip()
    if _Z85.match(text):
        try:
            if len(zmq.utils.z85.decode(text)) == KEY_BYTES:
                return text.encode("ascii")
        except (ValueError, binascii.Error):
            pass
    if _HEX.match(text):
        return zmq.utils.z85.encode(bytes.fromhex(text))
    raise BadKey(f"not a CurveZMQ public key (40 characters of Z85 or 64 hex digits): "
                 f"{text[:70]!r}")


def fingerprint(public: str | bytes) -> str:
    """``SHA256:`` and the unpadded base64 of the SHA-256 of the key's 32 octets, as
    OpenSSH prints host key fingerprints. ``public`` is Z85 (text or bytes) or hex.
    Raises :class:`BadKey`."""
    raw = zmq.utils.z85.decode(parse_key(public))
    digest = base64.b64encode(hashlib.sha256(raw).digest()).decode("ascii").rstrip("=")
    return f"SHA256:{digest}"


def config_dir() -> Path:
    """``$XDG_CONFIG_HOME/zmeet``, or ``~/.config/zmeet`` (XDG Base Directory spec): where a
    person's key pair and the brokers they know are kept."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "zmeet"


def default_identity_path() -> Path:
    """The default identity: ``config_dir()/identity.key_secret``."""
    return config_dir() / "identity.key_secret"


def load_or_create(secret_path: Path | str) -> tuple[KeyPair, bool]:
    """The key pair in the certificate file ``secret_path`` (``NAME.key_secret``), made there
    (with ``NAME.key`` beside it) if there is none; returns ``(pair, created)``.

    A new pair is written into a private temporary folder first and moved into place, so that
    the secret is never readable by others, not even for a moment: the folder is made 0700 if
    new, the secret file 0600. Raises :class:`KeyFileError` if the file exists but holds no
    secret key, or is readable by others (as OpenSSH refuses a private key that others can
    read), OSError if it cannot be read or written."""
    path = Path(secret_path)
    if path.exists():
        return load(path), False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    stem = path.name[: -len(".key_secret")] if path.name.endswith(".key_secret") else path.name
    tmp = tempfile.mkdtemp(prefix=".zmeet-key-", dir=path.parent)  # 0700
    try:
        public_file, secret_file = zmq.auth.create_certificates(tmp, stem)
        os.chmod(secret_file, 0o600)
        os.chmod(public_file, 0o644)
        public_target = path.with_name(stem + ".key")
        os.replace(public_file, public_target)
        try:
            os.link(secret_file, path)  # fails if another process made it meanwhile
        except FileExistsError:
            return load(path), False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return load(path), True


def load(secret_path: Path | str) -> KeyPair:
    """The key pair in the certificate file ``secret_path``. Raises :class:`KeyFileError` if it
    holds no secret key or others can read it, OSError if it cannot be read."""
    path = Path(secret_path)
    mode = path.stat().st_mode
    if mode & 0o077:
        raise KeyFileError(f"{path} is readable by others (mode {mode & 0o777:o}): "
                        f"run `chmod 600 {path}`")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (ValueError, OSError) as exc:
        raise KeyFileError(f"{path} is not a ZeroMQ certificate file: {exc}") from None
    if not public or not secret:
        raise KeyFileError(f"{path} holds no secret key (is it the .key file, not .key_secret?)")
    return KeyPair(parse_key(public), secret)


def load_key_list(path: Path | str) -> frozenset[bytes]:
    """The public keys listed in ``path`` (``--allow-keys``): one per line, Z85 or hex, with
    anything after it on the line (a name) and ``#`` comment lines ignored, as in OpenSSH's
    ``authorized_keys``. Raises :class:`BadKey` naming the line of a bad key, OSError."""
    keys = set()
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word = line.split()[0]
        try:
            keys.add(parse_key(word))
        except BadKey as exc:
            raise BadKey(f"{path}, line {number}: {exc}") from None
    return frozenset(keys)


class KnownBrokers:
    """The brokers' keys a person has met (``config_dir()/known_brokers``), one per line:
    ``ADDRESS KEY``, with ``#`` comments, as OpenSSH's ``known_hosts``.

    ``ADDRESS`` is the broker's endpoint as the person gave it (``tcp://HOST:PORT``)."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else config_dir() / "known_brokers"

    def lookup(self, address: str) -> tuple[bytes, int] | None:
        """The remembered key of ``address`` and its line number, or None."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        for number, line in enumerate(text.splitlines(), 1):
            words = line.split()
            if len(words) >= 2 and not words[0].startswith("#") and words[0] == address:
                try:
                    return parse_key(words[1]), number
                except BadKey:
                    continue
        return None

    def check(self, address: str, key: bytes) -> bool:
        """Check ``key`` (Z85) for the broker at ``address``: True if it was remembered now (the
        first contact), False if it was known already. Raises :class:`BrokerKeyChanged`
        naming both fingerprints and how to fix it if another key is remembered."""
        known = self.lookup(address)
        if known is None:
            self.remember(address, key)
            return True
        remembered, line = known
        if remembered != key:
            raise BrokerKeyChanged(
                f"the broker at {address} has key {fingerprint(key)}, but {self.path} "
                f"(line {line}) remembers {fingerprint(remembered)} for it. Someone may be "
                "impersonating the broker. If its key was changed on purpose (a new data "
                f"directory), run `zmeet keys --forget {address}` and connect again."
            )
        return False

    def remember(self, address: str, key: bytes) -> None:
        """Add ``address``'s ``key`` (appended; the folder made 0700 if new)."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.path, "a", encoding="utf-8") as out:
            out.write(f"{address} {key.decode('ascii')}\n")

    def forget(self, address: str) -> int:
        """Forget every key remembered for ``address``; returns how many lines went."""
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)
        except FileNotFoundError:
            return 0
        kept = [line for line in lines if not (line.split()[:1] == [address])]
        if len(kept) != len(lines):
            self.path.write_text("".join(kept), encoding="utf-8")
        return len(lines) - len(kept)


_ZMEET_URL = re.compile(r"^zmeet://(?P<host>\[[^\]]+\]|[^:/]+):(?P<port>\d+)/(?P<key>.+)$")


def parse_address(address: str) -> tuple[str, bytes | None]:
    """A broker address as a person gives it: ``tcp://HOST:PORT``, ``ipc://PATH`` (returned as
    is, with no key) or ``zmeet://HOST:PORT/KEY``, which pins the broker's key (Z85 or hex):
    ``("tcp://HOST:PORT", key)``. Raises :class:`BadKey` for a bad key in a zmeet URL."""
    match = _ZMEET_URL.match(address)
    if match is None:
        return address, None
    return f"tcp://{match['host']}:{match['port']}", parse_key(match["key"])


def secure_server(sock: zmq.Socket, pair: KeyPair, domain: str) -> None:
    """Make ``sock`` a CurveZMQ server (RFC 26) with ``pair``, authenticated by the ZAP handler
    of ``domain`` (RFC 27). Call before it binds."""
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_SECRETKEY, pair.secret)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, pair.public)
    sock.setsockopt_string(zmq.ZAP_DOMAIN, domain)


def secure_client(sock: zmq.Socket, server_key: bytes, pair: KeyPair) -> None:
    """Make ``sock`` a CurveZMQ client of the server whose public key is ``server_key`` (Z85),
    as ``pair``. Call before it connects."""
    sock.setsockopt(zmq.CURVE_SERVERKEY, server_key)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, pair.public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, pair.secret)


__all__ = [
    "BadKey",
    "BrokerKeyChanged",
    "KeyFileError",
    "KeyPair",
    "KnownBrokers",
    "config_dir",
    "default_identity_path",
    "fingerprint",
    "load",
    "load_key_list",
    "load_or_create",
    "parse_address",
    "parse_key",
    "secure_client",
    "secure_server",
]
