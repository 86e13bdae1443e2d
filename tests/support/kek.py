"""Key-encryption keys the tests hold for real: moto's KMS server and a SoftHSM2 token.

Both are started by the tests (a ``moto.server`` child process on a free loopback port;
a token initialised in a temporary directory that ``SOFTHSM2_CONF`` points at) and
removed when the tests are done. Each offers the same small surface, so one test can
run against either: make a KEK, say which settings select it, remove it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol, Self

import httpx

from tests.support import leakcheck
from token_vault.service.process import StartStop, free_port

AWS_TEST_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
SOFTHSM_MODULES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
)


class KekHolder(Protocol):
    """Where the tests' KEKs live: a KMS or a token."""

    provider: str

    def create_kek(self) -> str:
        """A new KEK; returns its name (KMS key id, or PKCS#11 key label)."""
        ...

    def env(self, kek: str) -> dict[str, str]:
        """The environment that selects ``kek`` (TOKEN_VAULT_* and what the client needs)."""
        ...


class MotoKms(StartStop):
    """moto's server mode as a KMS, on ``127.0.0.1:port``."""

    provider = "aws-kms"

    def __init__(self, *, startup_timeout: float = 30.0) -> None:
        self.port = free_port()
        self.startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        fd, log_path = tempfile.mkstemp(prefix="moto-", suffix=".log")
        Path(log_path).unlink()
        self._log = os.fdopen(fd, "w+b")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **AWS_TEST_CREDENTIALS},
        )
        deadline = time.monotonic() + self.startup_timeout
        with httpx.Client(timeout=2.0) as http:
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    output = self.output()
                    self.stop()
                    raise RuntimeError(f"moto.server exited during startup:\n{output}")
                try:
                    if http.get(f"{self.endpoint_url}/moto-api/").status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        output = self.output()
        self.stop()
        raise RuntimeError(f"moto.server not ready after {self.startup_timeout} s:\n{output}")

    def output(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return str(self._log.read()[-4000:].decode("utf-8", "replace"))

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def client(self) -> Any:
        import boto3

        return boto3.session.Session().client(
            "kms",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def create_kek(self) -> str:
        key_id: str = self.client().create_key(Description="token-vault test KEK")["KeyMetadata"][
            "KeyId"
        ]
        return key_id

    def env(self, kek: str) -> dict[str, str]:
        return {
            **AWS_TEST_CREDENTIALS,
            "TOKEN_VAULT_KEK_PROVIDER": "aws-kms",
            "TOKEN_VAULT_KMS_KEY_ID": kek,
            "TOKEN_VAULT_KMS_ENDPOINT_URL": self.endpoint_url,
            "TOKEN_VAULT_KMS_REGION": "us-east-1",
        }


def find_softhsm_module() -> str:
    for path in SOFTHSM_MODULES:
        if Path(path).exists():
            return path
    raise FileNotFoundError(
        "SoftHSM2 is not installed: apt-get install softhsm2 (.ci/run installs it)"
    )


class SoftHsm(StartStop):
    """A SoftHSM2 token in a temporary directory, with AES KEKs made on it.

    While started, ``SOFTHSM2_CONF`` in this process's environment points at the
    token's configuration (SoftHSM reads it when the PKCS#11 module is initialised);
    :meth:`stop` unloads the module, restores the variable and removes the directory.
    """

    provider = "pkcs11"

    def __init__(self, label: str = "token-vault-test") -> None:
        self.label = label
        self.module = find_softhsm_module()
        self.pin = secrets.token_hex(8)
        self.so_pin = secrets.token_hex(8)
        self._tmp: Path | None = None
        self._previous_conf: str | None = None

    @property
    def conf(self) -> Path:
        assert self._tmp is not None
        return self._tmp / "softhsm2.conf"

    def start(self) -> Self:
        leakcheck.remember_secret(self.pin)
        leakcheck.remember_secret(self.so_pin)
        self._tmp = Path(tempfile.mkdtemp(prefix="token-vault-softhsm-"))
        (self._tmp / "tokens").mkdir()
        self.conf.write_text(
            f"directories.tokendir = {self._tmp / 'tokens'}\n"
            "objectstore.backend = file\nlog.level = ERROR\n",
            encoding="utf-8",
        )
        self._previous_conf = os.environ.get("SOFTHSM2_CONF")
        os.environ["SOFTHSM2_CONF"] = str(self.conf)
        try:
            subprocess.run(
                [
                    "softhsm2-util",
                    "--init-token",
                    "--free",
                    "--label",
                    self.label,
                    "--so-pin",
                    self.so_pin,
                    "--pin",
                    self.pin,
                ],
                check=True,
                capture_output=True,
                text=True,
                env={**os.environ, "SOFTHSM2_CONF": str(self.conf)},
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        import pkcs11

        pkcs11.unload(self.module)
        if self._tmp is None:
            return
        if self._previous_conf is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = self._previous_conf
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._tmp = None

    def session(self) -> Any:
        import pkcs11

        token = pkcs11.lib(self.module).get_token(token_label=self.label)
        return token.open(user_pin=self.pin, rw=True)

    def create_kek(self) -> str:
        from pkcs11 import Attribute, KeyType

        label = f"kek-{secrets.token_hex(4)}"
        with self.session() as session:
            session.generate_key(
                KeyType.AES,
                256,
                label=label,
                store=True,
                template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False},
            )
        return label

    def remove_kek(self, kek: str) -> None:
        """Destroy the KEK on the token (moto has no such step: it keeps decrypting with
        keys disabled or scheduled for deletion)."""
        from pkcs11 import KeyType, ObjectClass

        with self.session() as session:
            session.get_key(
                label=kek, key_type=KeyType.AES, object_class=ObjectClass.SECRET_KEY
            ).destroy()

    def env(self, kek: str) -> dict[str, str]:
        return {
            "SOFTHSM2_CONF": str(self.conf),
            "TOKEN_VAULT_KEK_PROVIDER": "pkcs11",
            "TOKEN_VAULT_PKCS11_MODULE": self.module,
            "TOKEN_VAULT_PKCS11_TOKEN_LABEL": self.label,
            "TOKEN_VAULT_PKCS11_PIN": self.pin,
            "TOKEN_VAULT_PKCS11_KEY_LABEL": kek,
        }
