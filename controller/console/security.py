"""Who may write through the lab console, and how a form proves it came from the console.

* **Bind address.** Loopback by default (:data:`DEFAULT_HOST`); any other
  address must be given with ``--host`` and is warned about
  (:func:`bind_warning`). On loopback the console also refuses requests whose
  ``Host`` header names another host (:func:`allowed_hosts`), so a web page
  elsewhere cannot reach it through DNS rebinding.
* **The write token.** Read from ``--token-file``, else from the environment
  variable :data:`TOKEN_ENV`, else made up at start and printed
  (:func:`load_token`). Compared in constant time (:func:`hmac.compare_digest`).
  Read-only pages need none.
* **Sessions.** A person unlocks the console once with their name and the
  token (``POST /unlock``); the console then keeps a random session id in an
  ``HttpOnly``, ``SameSite=Strict`` cookie, and remembers the name, so every
  action names who acted. A script may instead send ``Authorization: Bearer
  TOKEN`` with each request.
* **Cross-site request forgery.** Every form carries a CSRF value that is the
  HMAC, under a secret made at start, of a random cookie the console set
  (the signed double-submit pattern): a page on another site can neither
  read the cookie nor compute the value. A request that carries an
  ``Origin`` header must name the console's own origin.

Example::

    token, source = load_token(None, os.environ)
    guard = Guard(token)
    sid = guard.unlock("ada", token)          # None: wrong token
    assert guard.session(sid).who == "ada"
    cookie = new_csrf_cookie()
    assert guard.csrf_ok(cookie, guard.csrf_value(cookie))
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"
TOKEN_ENV = "SELFLAB_CONSOLE_TOKEN"
MIN_TOKEN_CHARS = 16
SESSION_COOKIE = "selflab_session"
CSRF_COOKIE = "selflab_csrf"
CSRF_FIELD = "csrf"
SESSION_TTL_S = 12 * 3600.0
"""An unlocked session lasts this long (seconds), then the token is asked again."""
WHO_PATTERN = re.compile(r"^[\w][\w .@'()+-]{0,59}$")
"""A person's name as the console records it: 1 to 60 letters, digits, spaces and ``.@'()+-``."""


class TokenError(ValueError):
    """The write token cannot be had (an empty or missing token file, a token too short); the message says what to do."""


def load_token(token_file: str | Path | None, environ: Mapping[str, str]) -> tuple[str, str]:
    """The write token and where it came from: ``"file"`` (``token_file``),
    ``"env"`` (:data:`TOKEN_ENV`) or ``"generated"`` (random, 256 bits, for
    printing at start). A given token shorter than :data:`MIN_TOKEN_CHARS`
    is refused."""
    if token_file is not None:
        path = Path(token_file)
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise TokenError(f"--token-file {path}: cannot read it ({exc.strerror or exc}); give a readable file holding the token") from None
        except UnicodeDecodeError:
            raise TokenError(f"--token-file {path}: not text; write the token into it as one line") from None
        return _checked(token, f"--token-file {path}"), "file"
    if environ.get(TOKEN_ENV):
        return _checked(environ[TOKEN_ENV].strip(), TOKEN_ENV), "env"
    return secrets.token_urlsafe(32), "generated"


def _checked(token: str, where: str) -> str:
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise TokenError(f"{where}: the token must be at least {MIN_TOKEN_CHARS} characters without spaces "
                         f"(got {len(token)}); make one with: python -c \"import secrets; print(secrets.token_urlsafe(32))\"")
    return token


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` serves this machine only (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_warning(host: str) -> str | None:
    """The warning to log when the console binds ``host`` (``None`` on loopback)."""
    if is_loopback(host):
        return None
    return (f"the console listens on {host}, not only on this machine: anyone who can reach it can read the campaign "
            "(writing still needs the token); put it behind TLS or an SSH tunnel, or bind 127.0.0.1")


def allowed_hosts(host: str) -> list[str]:
    """The ``Host`` header values the console answers: loopback names when
    bound to loopback (against DNS rebinding), any when bound elsewhere."""
    if is_loopback(host):
        return ["127.0.0.1", "localhost", "[::1]", "::1"]
    return ["*"]


def new_csrf_cookie() -> str:
    """A fresh random value for the :data:`CSRF_COOKIE` cookie."""
    return secrets.token_urlsafe(24)


def check_who(who: str) -> str:
    """``who`` stripped, or :class:`ValueError` saying what a name may hold."""
    who = " ".join(who.split())
    if not WHO_PATTERN.fullmatch(who):
        raise ValueError("your name: 1 to 60 letters, digits, spaces and .@'()+- (it is recorded with every action)")
    return who


@dataclass(frozen=True)
class Session:
    """An unlocked browser: who it is and until when (``time.monotonic()`` seconds)."""

    who: str
    until: float


class Guard:
    """The token, the CSRF secret and the unlocked sessions of one console process."""

    def __init__(self, token: str, session_ttl_s: float = SESSION_TTL_S) -> None:
        self._token = token.encode()
        self._secret = secrets.token_bytes(32)
        self._ttl = session_ttl_s
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def token_ok(self, presented: str | None) -> bool:
        """Whether ``presented`` is the write token (constant time)."""
        return presented is not None and hmac.compare_digest(presented.encode(), self._token)

    def unlock(self, who: str, presented: str | None) -> str | None:
        """A new session id for ``who`` when ``presented`` is the token, else ``None``."""
        if not self.token_ok(presented):
            return None
        sid = secrets.token_urlsafe(32)
        with self._lock:
            now = time.monotonic()
            self._sessions = {k: s for k, s in self._sessions.items() if s.until > now}
            self._sessions[sid] = Session(who, now + self._ttl)
        return sid

    def session(self, sid: str | None) -> Session | None:
        """The live session of cookie value ``sid``, if any."""
        if not sid:
            return None
        with self._lock:
            found = self._sessions.get(sid)
        return found if found is not None and found.until > time.monotonic() else None

    def lock(self, sid: str | None) -> None:
        """Forget session ``sid`` (the person locked the console again)."""
        with self._lock:
            self._sessions.pop(sid or "", None)

    def csrf_value(self, cookie: str) -> str:
        """The value a form must carry beside the CSRF cookie ``cookie``."""
        return hmac.new(self._secret, cookie.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, cookie: str | None, presented: str | None) -> bool:
        """Whether a form's CSRF value matches its cookie (constant time)."""
        if not cookie or not presented:
            return False
        return hmac.compare_digest(self.csrf_value(cookie).encode(), presented.encode())
