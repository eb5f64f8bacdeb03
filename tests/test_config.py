"""Start-up configuration: every malformed value is refused with the variable's name."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from operator_service.config import load_settings
from operator_service.env_vars import ConfigError


@pytest.mark.parametrize(
    "name, value",
    [
        ("ALLOWED_PROVIDERS", "0xabc"),
        ("ALLOWED_PROVIDERS", '{"a": 1}'),
        ("ALLOWED_ADMINS", '["ok", 5]'),
        ("SIGNATURE_REQUIRED", "yes"),
        ("POSTGRES_PORT", "fifty"),
        ("ALGO_POD_TIMEOUT", "an hour"),
        ("STORAGE_EXPIRY", "-1"),
        ("KUBERNETES", "maybe"),
        ("LOG_LEVEL", "LOUD"),
        ("LOG_CFG", "/nonexistent/logging.yaml"),
        ("NONCE_WINDOW", "0"),
        ("RESULT_TIMEOUT", "soon"),
        ("CORS_ORIGINS", "https://market.example"),
        ("CORS_ORIGINS", '[""]'),
    ],
)
def test_malformed_values_name_the_variable(name, value):
    with pytest.raises(ConfigError) as caught:
        load_settings({name: value})
    assert name in str(caught.value)


def test_defaults_and_parsing():
    settings = load_settings(
        {
            "ALLOWED_PROVIDERS": '["0xABC"]',
            "ALLOWED_ADMINS": '["s1", "s2"]',
            "SIGNATURE_REQUIRED": "1",
            "POSTGRES_PORT": "6543",
            "ALGO_POD_TIMEOUT": "3600",
            "X-API-KEY": "k",
            "CLIENT-ID": "c",
        }
    )
    assert settings.allowed_providers == ("0xabc",)
    assert settings.allowed_admins == ("s1", "s2")
    assert settings.signature_required and settings.postgres.port == 6543
    assert (settings.algo_pod_timeout, settings.result_api_key, settings.result_client_id) == ("3600", "k", "c")
    assert (settings.kubernetes, settings.default_namespace, settings.nonce_window_seconds) == (
        "auto",
        "ocean-compute",
        300,
    )


def test_secrets_stay_out_of_the_settings_repr():
    settings = load_settings(
        {"POSTGRES_PASSWORD": "pg-secret", "ALLOWED_ADMINS": '["admin-secret"]', "X-API-KEY": "key-secret"}
    )
    text = repr(settings)
    assert "pg-secret" not in text and "admin-secret" not in text and "key-secret" not in text


def test_the_wsgi_entry_point_refuses_to_start_with_a_clear_message():
    env = {**os.environ, "ALLOWED_PROVIDERS": "not-a-list", "KUBERNETES": "off"}
    result = subprocess.run(
        [sys.executable, "-c", "import operator_service.run"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 4
    assert "ALLOWED_PROVIDERS must be a JSON list" in result.stderr
    assert "Traceback" not in result.stderr
