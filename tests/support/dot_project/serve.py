"""Start the django-oauth-toolkit test provider as a process.

Generates a fresh RSA signing key, runs the migrations on a new SQLite database,
creates the users and OAuth applications listed in ``<state-dir>/seed.json``, then
serves Django on a threaded ``wsgiref`` server until SIGTERM::

    python tests/support/dot_project/serve.py --state-dir DIR --port 8123

The issuer is ``http://<host>:<port>/o``. ``seed.json`` looks like::

    {"users": [{"username": "alice", "password": "...", "email": "...",
                "first_name": "Alice", "last_name": "Anderson", "superuser": false}],
     "applications": [{"name": "token-vault", "client_id": "...", "client_secret": "...",
                       "grant_type": "authorization-code", "redirect_uris": ["..."],
                       "post_logout_redirect_uris": ["..."]}]}

``grant_type`` is a DOT grant type (``authorization-code``, ``client-credentials``);
every application is confidential and signs ID tokens with RS256.
``tests/support/third_party.py`` (``DjangoOAuthToolkit``) writes the seed and runs this.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any, NoReturn
from wsgiref.simple_server import WSGIServer, make_server

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

SIGNING_KEY_FILE = "oidc-signing-key.pem"


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """``wsgiref``'s server, one thread per request (a login page and its assets)."""

    daemon_threads = True


class _ThreadingWSGIServer6(_ThreadingWSGIServer):
    address_family = socket.AF_INET6


def write_signing_key(state_dir: Path) -> None:
    """Write a new 2048-bit RSA key (PKCS#8 PEM) for RS256 ID tokens, mode 0600."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path = state_dir / SIGNING_KEY_FILE
    path.touch(mode=0o600)
    path.write_bytes(pem)


def setup_django(state_dir: Path, issuer: str, *, reuse_protection: bool) -> None:
    """Point Django at ``dot_project.settings`` with this run's state and issuer."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ["DJANGO_SETTINGS_MODULE"] = "dot_project.settings"
    os.environ["DOT_STATE_DIR"] = str(state_dir)
    os.environ["DOT_ISSUER"] = issuer
    os.environ["DOT_REUSE_PROTECTION"] = "1" if reuse_protection else "0"
    import django  # type: ignore[import-untyped]

    django.setup()


def seed(data: dict[str, Any]) -> None:
    """Migrate the empty database, then create the users and applications."""
    from django.contrib.auth import get_user_model  # type: ignore[import-untyped]
    from django.core.management import call_command  # type: ignore[import-untyped]
    from oauth2_provider.models import get_application_model  # type: ignore[import-untyped]

    call_command("migrate", verbosity=0, interactive=False)
    users = get_user_model().objects
    for user in data.get("users", []):
        create = users.create_superuser if user.get("superuser") else users.create_user
        create(
            username=user["username"],
            password=user["password"],
            email=user.get("email", ""),
            first_name=user.get("first_name", ""),
            last_name=user.get("last_name", ""),
        )
    application = get_application_model()
    for app in data.get("applications", []):
        application.objects.create(
            name=app["name"],
            client_id=app["client_id"],
            client_secret=app["client_secret"],  # stored hashed
            client_type=application.CLIENT_CONFIDENTIAL,
            authorization_grant_type=app["grant_type"],
            redirect_uris=" ".join(app.get("redirect_uris", [])),
            post_logout_redirect_uris=" ".join(app.get("post_logout_redirect_uris", [])),
            algorithm=application.RS256_ALGORITHM,
            skip_authorization=bool(app.get("skip_authorization", False)),
        )


def _stop(signum: int, frame: object) -> NoReturn:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    """Prepare the state directory and serve until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--reuse-protection", action="store_true")
    args = parser.parse_args(argv)
    state_dir: Path = args.state_dir.resolve()
    host = f"[{args.host}]" if ":" in args.host else args.host
    issuer = f"http://{host}:{args.port}/o"

    write_signing_key(state_dir)
    setup_django(state_dir, issuer, reuse_protection=args.reuse_protection)
    seed(json.loads((state_dir / "seed.json").read_text()))

    from django.core.wsgi import get_wsgi_application  # type: ignore[import-untyped]

    server_class = _ThreadingWSGIServer6 if ":" in args.host else _ThreadingWSGIServer
    httpd = make_server(args.host, args.port, get_wsgi_application(), server_class=server_class)
    signal.signal(signal.SIGTERM, _stop)
    print(f"django-oauth-toolkit provider ready: issuer {issuer}", flush=True)
    try:
        httpd.serve_forever()
    except (SystemExit, KeyboardInterrupt):
        pass
    finally:
        httpd.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
