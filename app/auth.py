"""Optional shared team password for the Streamlit app.

Set ``BACKEND_APP_PASSWORD`` on the server and every browser session must
enter it once; unset (the default, for local use) and the app is open. Call
:func:`require_password` first thing in ``app/main.py``, before any other
``st.`` call that renders content::

    from auth import require_password   # app/ is on sys.path under `streamlit run app/main.py`
    require_password()

The unlocked flag lives in ``st.session_state`` (per browser session, never in
a shared cache) and is tied to a digest of the current password, so changing
the password locks every session again. So that a reload (a new session) does
not ask again, unlocking also sets a cookie ``designer_auth`` (path ``/``,
SameSite=Strict, 7 days) holding ``<expiry>.<HMAC-SHA256(key derived from the
password, expiry)>``: a new session that sends a valid, unexpired cookie is
unlocked; a new password invalidates every cookie. Streamlit cannot set a
cookie from Python, so a zero-height component sets it from the browser
(hence not HttpOnly). ``app/main.py`` calls ``st.navigation`` before the gate,
so a deep link (``/export``) is the page shown once unlocked. For per-user
identity use Streamlit's built-in OIDC login (``st.login``) instead: see
docs/DOCKER.md.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import time

import streamlit as st

PASSWORD_ENV = "BACKEND_APP_PASSWORD"
UNLOCKED_KEY = "auth_unlocked"  # session_state: digest of the password this session unlocked with
WRONG_PASSWORD_DELAY_S = 1.0  # slows down guessing; a session waits, the server does not


COOKIE = "designer_auth"
COOKIE_MAX_AGE_S = 7 * 24 * 3600
_COOKIE_PENDING_KEY = "auth_cookie_pending"  # session_state: a token still to be written to the browser


def _digest(password: str) -> str:
    return hashlib.sha256(password.encode("utf-8")).hexdigest()


def _mac(password: str, expiry: int) -> str:
    key = hashlib.sha256(b"designer-auth-cookie:" + password.encode("utf-8")).digest()
    return hmac.new(key, str(expiry).encode(), hashlib.sha256).hexdigest()


def make_token(password: str, now: float | None = None) -> str:
    """Cookie value ``<expiry>.<mac>`` for ``password``, valid ``COOKIE_MAX_AGE_S`` from ``now``."""
    expiry = int((time.time() if now is None else now) + COOKIE_MAX_AGE_S)
    return f"{expiry}.{_mac(password, expiry)}"


def token_valid(token: str | None, password: str, now: float | None = None) -> bool:
    """True for an unexpired token made with this ``password`` (constant-time comparison)."""
    if not token or not isinstance(token, str) or len(token) > 200 or "." not in token:
        return False
    expiry_text, mac = token.split(".", 1)
    if not expiry_text.isdigit() or len(expiry_text) > 12:
        return False
    expiry = int(expiry_text)
    if expiry < (time.time() if now is None else now):
        return False
    return hmac.compare_digest(mac.encode(), _mac(password, expiry).encode())


def _cookie_token() -> str | None:
    try:
        return st.context.cookies.get(COOKIE)
    except Exception:  # noqa: BLE001 - no browser context (tests, bare mode)
        return None


def is_unlocked() -> bool:
    """This session is unlocked (or no password is set); a valid cookie from an earlier session unlocks it."""
    expected = os.environ.get(PASSWORD_ENV, "")
    if not expected:
        return True
    unlocked = st.session_state.get(UNLOCKED_KEY)
    if isinstance(unlocked, str) and hmac.compare_digest(unlocked, _digest(expected)):
        return True
    if token_valid(_cookie_token(), expected):
        st.session_state[UNLOCKED_KEY] = _digest(expected)
        return True
    return False


def _write_cookie(value: str, max_age: int) -> None:
    from streamlit.components.v1 import html

    # The component's srcdoc iframe shares the app's origin: its document.cookie is the app's.
    html(f"<script>document.cookie = {json.dumps(f'{COOKIE}={value}; Max-Age={max_age}; Path=/; SameSite=Strict')};</script>",
         height=0)


def password_required() -> bool:
    return bool(os.environ.get(PASSWORD_ENV, ""))


def check_password(candidate: str, expected: str) -> bool:
    """Constant-time comparison (hmac.compare_digest on UTF-8 bytes)."""
    return hmac.compare_digest(candidate.encode("utf-8"), expected.encode("utf-8"))


def require_password() -> None:
    """Render a password form and ``st.stop()`` until this session is unlocked; no-op when no password is set."""
    expected = os.environ.get(PASSWORD_ENV, "")
    if is_unlocked():
        pending = st.session_state.pop(_COOKIE_PENDING_KEY, None)
        if expected and pending:
            _write_cookie(pending, COOKIE_MAX_AGE_S)
        return
    st.title("Transformer designer")
    with st.form("auth_form"):
        candidate = st.text_input("Team password", type="password", key="auth_password")
        submitted = st.form_submit_button("Unlock")
    if submitted:
        if check_password(candidate or "", expected):
            st.session_state[UNLOCKED_KEY] = _digest(expected)
            st.session_state[_COOKIE_PENDING_KEY] = make_token(expected)  # written by the next (unlocked) run
            st.session_state.pop("auth_password", None)
            st.rerun()
        time.sleep(WRONG_PASSWORD_DELAY_S)
        st.error("Wrong password.")
    st.caption(f"This server is protected by a shared password (set by the administrator in `{PASSWORD_ENV}`).")
    st.stop()


def logout() -> None:
    """Lock this session again (e.g. from a sidebar button) and forget the browser's cookie."""
    st.session_state.pop(UNLOCKED_KEY, None)
    st.session_state.pop(_COOKIE_PENDING_KEY, None)
    _write_cookie("", 0)
