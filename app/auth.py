"""Optional shared team password for the Streamlit app.

Set ``BACKEND_APP_PASSWORD`` on the server and every browser session must
enter it once; unset (the default, for local use) and the app is open. Call
:func:`require_password` first thing in ``app/main.py``, before any other
``st.`` call that renders content::

    from auth import require_password   # app/ is on sys.path under `streamlit run app/main.py`
    require_password()

The unlocked flag lives in ``st.session_state`` (per browser session, never in
a shared cache) and is tied to a digest of the current password, so changing
the password locks every session again. For per-user identity use
Streamlit's built-in OIDC login (``st.login``) instead: see docs/DOCKER.md.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import time

import streamlit as st

PASSWORD_ENV = "BACKEND_APP_PASSWORD"
UNLOCKED_KEY = "auth_unlocked"  # session_state: digest of the password this session unlocked with
WRONG_PASSWORD_DELAY_S = 1.0  # slows down guessing; a session waits, the server does not


def _digest(password: str) -> str:
    return hashlib.sha256(password.encode("utf-8")).hexdigest()


def password_required() -> bool:
    return bool(os.environ.get(PASSWORD_ENV, ""))


def check_password(candidate: str, expected: str) -> bool:
    """Constant-time comparison (hmac.compare_digest on UTF-8 bytes)."""
    return hmac.compare_digest(candidate.encode("utf-8"), expected.encode("utf-8"))


def require_password() -> None:
    """Render a password form and ``st.stop()`` until this session is unlocked; no-op when no password is set."""
    expected = os.environ.get(PASSWORD_ENV, "")
    if not expected:
        return
    unlocked = st.session_state.get(UNLOCKED_KEY)
    if isinstance(unlocked, str) and hmac.compare_digest(unlocked, _digest(expected)):
        return
    st.title("Transformer designer")
    with st.form("auth_form"):
        candidate = st.text_input("Team password", type="password", key="auth_password")
        submitted = st.form_submit_button("Unlock")
    if submitted:
        if check_password(candidate or "", expected):
            st.session_state[UNLOCKED_KEY] = _digest(expected)
            st.session_state.pop("auth_password", None)
            st.rerun()
        time.sleep(WRONG_PASSWORD_DELAY_S)
        st.error("Wrong password.")
    st.caption(f"This server is protected by a shared password (set by the administrator in `{PASSWORD_ENV}`).")
    st.stop()


def logout() -> None:
    """Lock this session again (e.g. from a sidebar button)."""
    st.session_state.pop(UNLOCKED_KEY, None)
