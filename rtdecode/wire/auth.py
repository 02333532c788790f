"""Optional ZeroMQ CURVE authentication and encryption for the daemon's sockets (docs/protocol.md, "Security").

CURVE gives each side a key pair. The daemon's input PULL and output PUB sockets become CURVE servers with the
daemon's secret key; a client must know the daemon's public key, and its own public key must be on the daemon's
allow list, checked by a ZAP handler (`zmq.auth.thread.ThreadAuthenticator`). Everything on the wire is then
encrypted, and a client with an unknown key never completes its handshake: the daemon receives nothing from it and
sends it nothing.

Key files use the ZeroMQ certificate format that czmq and pyzmq read (`zmq.auth.load_certificate`): `NAME.key`
holds the Z85 public key and may be shared; `NAME.key_secret` holds both keys, is written with mode 0600 and must
stay private. A file holding a bare 40-character Z85 key is accepted too. Both files are written atomically.

Why a callback allow list rather than `Authenticator.configure_curve(location=DIR)`: that takes exactly one folder
and, when the folder cannot be read, only logs the error and then denies everyone. Here keys from any mix of files
and folders are loaded and validated when the daemon starts (an unreadable key is an error naming the file), and
refused handshakes are counted for the daemon's status.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from pathlib import Path

import zmq
import zmq.auth.thread
from zmq.utils import z85

from rtdecode.io.atomic import atomic_write

__all__ = [
    "AuthError",
    "require_curve",
    "write_keypair",
    "load_public_key",
    "load_keypair",
    "load_allowed_keys",
    "CurveServer",
    "configure_client",
    "is_loopback",
    "exposure_warnings",
]

log = logging.getLogger("rtdecode.wire.auth")

PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"


class AuthError(ValueError):
    """A key file is missing, malformed or unsafe, or CURVE is unavailable; the message says what to do."""


def require_curve() -> None:
    """Raise AuthError unless this libzmq was built with CURVE (libsodium or its bundled tweetnacl)."""
    if not zmq.has("curve"):
        raise AuthError(
            f"this libzmq ({zmq.zmq_version()}) was built without CURVE security; install a pyzmq wheel "
            "from PyPI (`pip install --force-reinstall pyzmq`), which bundles libzmq with CURVE"
        )


def _banner(kind: str) -> str:
    return (
        f"#   ZeroMQ CURVE {kind} Certificate, written by `rtdecode keys` on {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
        + (
            "#   DO NOT share this file: anyone holding it can impersonate its owner.\n\n"
            if kind == "**Secret**"
            else "#   Give this file to the peer that must accept this key (`--allow-client`, `curve_server_key`).\n\n"
        )
    )


def _cert(banner: str, public: bytes, secret: bytes | None = None) -> bytes:
    lines = [banner, "metadata\n", "curve\n", f'    public-key = "{public.decode()}"\n']
    if secret is not None:
        lines.append(f'    secret-key = "{secret.decode()}"\n')
    return "".join(lines).encode()


def write_keypair(out_dir: str | Path, name: str = "rtdecode", force: bool = False) -> tuple[Path, Path]:
    """Make a CURVE key pair; returns (public file `NAME.key`, secret file `NAME.key_secret`).

    Raises:
        AuthError: CURVE unavailable, a bad name, or the files exist and `force` is False (replacing a key pair
            locks out every peer configured with the old public key).
    """
    require_curve()
    if not name or "/" in name or name.startswith("."):
        raise AuthError(f"key name {name!r} must be a plain file name (no '/', not starting with '.')")
    out = Path(out_dir)
    public_path, secret_path = out / f"{name}{PUBLIC_SUFFIX}", out / f"{name}{SECRET_SUFFIX}"
    existing = [str(p) for p in (public_path, secret_path) if p.exists()]
    if existing and not force:
        verb = "exists" if len(existing) == 1 else "exist"
        raise AuthError(
            f"{' and '.join(existing)} already {verb}; pass --force to replace it (peers holding the old "
            "public key will be refused) or choose another --name"
        )
    public, secret = zmq.curve_keypair()
    with atomic_write(secret_path) as f:  # the temporary is created 0600 (mkstemp); chmod states the intent
        os.fchmod(f.fileno(), 0o600)
        f.write(_cert(_banner("**Secret**"), public, secret))
    with atomic_write(public_path) as f:
        os.fchmod(f.fileno(), 0o644)
        f.write(_cert(_banner("Public"), public))
    return public_path, secret_path


def _z85_key(value: bytes, where: str) -> bytes:
    if len(value) != 40:
        raise AuthError(f"{where}: a CURVE key is 40 Z85 characters, got {len(value)}")
    try:
        z85.decode(value)
    except Exception as e:  # KeyError for a character outside Z85, struct.error for an out-of-range group
        raise AuthError(f"{where}: not a Z85 key ({type(e).__name__})") from e
    return value


def _read_keys(path: Path) -> tuple[bytes | None, bytes | None]:
    """(public, secret) from a certificate file or a file holding one bare Z85 key (returned as public)."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise AuthError(f"cannot read key file {path}: {e.strerror}; make one with `rtdecode keys --out DIR`") from e
    public = secret = None
    for line in raw.splitlines():
        line = line.strip()
        if line.startswith(b"public-key"):
            public = _z85_key(line.split(b"=", 1)[1].strip(b" \t'\""), str(path))
        elif line.startswith(b"secret-key"):
            secret = _z85_key(line.split(b"=", 1)[1].strip(b" \t'\""), str(path))
    if public is None and secret is None:
        bare = [ln.strip() for ln in raw.splitlines() if ln.strip() and not ln.strip().startswith(b"#")]
        if len(bare) != 1:
            raise AuthError(f"{path}: no CURVE key found (expected a `rtdecode keys` file or one Z85 key)")
        public = _z85_key(bare[0], str(path))
    return public, secret


def load_public_key(key: str | bytes | Path) -> bytes:
    """A Z85 public key given as the key itself (40 characters) or a key file (public or secret certificate)."""
    if isinstance(key, (str, bytes)) and len(key) == 40 and not Path(os.fsdecode(key)).exists():
        return _z85_key(key.encode() if isinstance(key, str) else key, "key")
    public, secret = _read_keys(Path(os.fsdecode(key)))
    return public if public is not None else zmq.curve_public(secret)  # type: ignore[arg-type]


def load_keypair(path: str | Path) -> tuple[bytes, bytes]:
    """(public, secret) Z85 keys from a secret key file; warns when others can read it."""
    path = Path(path)
    public, secret = _read_keys(path)
    if secret is None:
        raise AuthError(f"{path} holds no secret key; pass the `.key_secret` file written by `rtdecode keys`")
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "secret key file %s is readable by other users (mode %o); run `chmod 600 %s`", path, mode & 0o777, path
        )
    derived = zmq.curve_public(secret)
    if public is not None and public != derived:
        raise AuthError(
            f"{path}: its public and secret keys do not belong together; regenerate it with `rtdecode keys`"
        )
    return derived, secret


def load_allowed_keys(paths: list[Path] | tuple[Path, ...]) -> set[bytes]:
    """Public keys from key files and folders (every `*.key` file inside a folder)."""
    keys: set[bytes] = set()
    for p in map(Path, paths):
        files = sorted(p.glob(f"*{PUBLIC_SUFFIX}")) if p.is_dir() else [p]
        if p.is_dir() and not files:
            raise AuthError(f"{p}: no *{PUBLIC_SUFFIX} public key files in this folder")
        keys.update(load_public_key(f) for f in files)
    return keys


class _AllowList:
    """ZAP credentials provider: allows listed client keys, counts every decision (read by the daemon's status)."""

    def __init__(self, keys: set[bytes]) -> None:
        self.keys, self.allowed, self.denied = frozenset(keys), 0, 0
        self._last_log = -1e9

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self.keys:
            self.allowed += 1
            return True
        self.denied += 1  # one writer (the authenticator thread); the daemon only reads
        if time.monotonic() - self._last_log >= 1.0:
            self._last_log = time.monotonic()
            log.warning(
                "refused a CURVE client with unknown public key %s (%d refused so far)", key.decode(), self.denied
            )
        return False


class CurveServer:
    """The daemon side: its key pair, the allow list and the ZAP authenticator thread.

    Args:
        secret_file: the daemon's `.key_secret` file.
        allow: client public key files or folders of `*.key` files; at least one key.

    Call `start(context)` before binding, `apply(socket)` on every socket before it binds, `stop()` at the end.
    """

    def __init__(self, secret_file: str | Path, allow: list[Path] | tuple[Path, ...]) -> None:
        require_curve()
        self.public, self.secret = load_keypair(secret_file)
        keys = load_allowed_keys(allow)
        if not keys:
            raise AuthError(
                "--curve-secret needs at least one --allow-client key file or folder (client public keys); "
                "make a client key pair with `rtdecode keys --out DIR --name client`"
            )
        self.allow = _AllowList(keys)
        self.authenticator: zmq.auth.thread.ThreadAuthenticator | None = None

    def start(self, context: zmq.Context) -> None:
        self.authenticator = zmq.auth.thread.ThreadAuthenticator(context, log=log.getChild("zap"))
        self.authenticator.start()
        self.authenticator.configure_curve_callback(domain="*", credentials_provider=self.allow)

    def apply(self, socket: zmq.Socket) -> None:
        socket.curve_secretkey = self.secret
        socket.curve_publickey = self.public
        socket.curve_server = True

    def stop(self) -> None:
        if self.authenticator is not None:
            self.authenticator.stop()
            self.authenticator = None


def configure_client(
    socket: zmq.Socket,
    server_key: str | bytes | Path,
    keys: str | Path | None = None,
    public: str | bytes | None = None,
    secret: str | bytes | None = None,
) -> None:
    """Make `socket` a CURVE client of a daemon (call before `connect`).

    Args:
        server_key: the daemon's public key, or its `.key` / `.key_secret` file.
        keys: this client's `.key_secret` file; or give `public` and `secret` (Z85) instead.
    """
    require_curve()
    if keys is not None:
        pub, sec = load_keypair(keys)
    elif public is not None and secret is not None:
        pub = _z85_key(public.encode() if isinstance(public, str) else public, "curve_public")
        sec = _z85_key(secret.encode() if isinstance(secret, str) else secret, "curve_secret")
    else:
        raise AuthError(
            "a CURVE client needs its own key pair: pass curve_keys=PATH (a `.key_secret` file from "
            "`rtdecode keys`) or curve_public and curve_secret"
        )
    socket.curve_serverkey = load_public_key(server_key)
    socket.curve_publickey = pub
    socket.curve_secretkey = sec


def is_loopback(endpoint: str) -> bool:
    """True for ipc://, inproc:// and tcp:// on 127.0.0.0/8, localhost or ::1."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    host = endpoint.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


def exposure_warnings(endpoints: list[str] | tuple[str, ...], curve: bool) -> list[str]:
    """One warning per endpoint reachable from other machines (the daemon logs them, `rtdecode serve` prints them)."""
    out = []
    for e in endpoints:
        if not is_loopback(e):
            risk = (
                "clients must hold an allowed CURVE key"
                if curve
                else "WITHOUT AUTHENTICATION anyone who can reach it can inject spikes into the decoder and read every "
                "decode; use --curve-secret/--allow-client or a loopback address"
            )
            out.append(f"SECURITY: {e} is reachable from other machines: {risk}")
    return out
