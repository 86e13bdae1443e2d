"""Django settings of the django-oauth-toolkit test provider (see ``serve.py``).

Everything that varies per run comes from the environment, set by ``serve.py``:
``DOT_STATE_DIR`` (a temp dir holding the SQLite database and the RSA signing key),
``DOT_ISSUER`` (``http://127.0.0.1:<port>/o``) and ``DOT_REUSE_PROTECTION``.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

_HERE = Path(__file__).resolve().parent
STATE_DIR = Path(os.environ["DOT_STATE_DIR"])
ISSUER = os.environ["DOT_ISSUER"]

SECRET_KEY = secrets.token_urlsafe(32)  # one process, nothing signed outlives it
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "oauth2_provider",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "dot_project.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [_HERE / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": STATE_DIR / "db.sqlite3"}}
STATIC_URL = "/static/"
LOGIN_URL = "/accounts/login/"
# Test users and client secrets only: a fast hasher keeps each token request quick
# (DOT checks the hashed client secret on every call).
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

OAUTH2_PROVIDER = {
    "OIDC_ENABLED": True,
    "OIDC_RSA_PRIVATE_KEY": (STATE_DIR / "oidc-signing-key.pem").read_text(),
    "OIDC_ISS_ENDPOINT": ISSUER,
    "OIDC_RP_INITIATED_LOGOUT_ENABLED": True,
    "OAUTH2_VALIDATOR_CLASS": "dot_project.validators.ClaimsValidator",
    "SCOPES": {
        "openid": "OpenID Connect",
        "profile": "Your name",
        "email": "Your e-mail address",
        "offline_access": "Access while you are away",
        "introspection": "Introspect tokens (resource servers)",
        "vault:token": "Take users' access tokens from token-vault",
        "vault:read": "Read token-vault entries",
    },
    "DEFAULT_SCOPES": ["openid"],
    "PKCE_REQUIRED": True,
    "ROTATE_REFRESH_TOKEN": True,
    "REFRESH_TOKEN_GRACE_PERIOD_SECONDS": 0,
    "REFRESH_TOKEN_REUSE_PROTECTION": os.environ.get("DOT_REUSE_PROTECTION") == "1",
    "ACCESS_TOKEN_EXPIRE_SECONDS": 300,
    "ID_TOKEN_EXPIRE_SECONDS": 300,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["stderr"], "level": "WARNING"},
}
