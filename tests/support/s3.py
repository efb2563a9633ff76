"""
A real S3 API server for the tests: ``moto_server`` (``moto[server]``, in
the test extras) on a free 127.0.0.1 port, as a subprocess, in the manner
of the Redis of ``test_shared.py``; and the environment a user would set
to point the AWS tools at it (`S3Env`).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.processes import BIN, poll_until, require

#: What every test's credentials are (moto accepts any unless told to check).
ACCESS_KEY = "AKIAHTTPFSTREAMTEST1"
SECRET_KEY = "httpfstream-test-secret"
REGION = "us-east-1"


def moto_binary() -> str | None:
    local = BIN / "moto_server"
    return str(local) if local.exists() else shutil.which("moto_server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MotoServer:
    """``moto_server`` on 127.0.0.1: the S3 wire protocol, in memory."""

    def __init__(self) -> None:
        binary = moto_binary()
        require("moto_server", binary, "pip install 'moto[server]'")
        assert binary is not None
        self.port = free_port()
        self.process = subprocess.Popen(
            [binary, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        poll_until(self._answers, 30, 0.1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _answers(self) -> bool:
        assert self.process.poll() is None, "moto_server exited"
        try:
            with socket.create_connection(("127.0.0.1", self.port), 1) as s:
                s.sendall(b"GET /moto-api/ HTTP/1.0\r\n\r\n")
                return s.recv(12).startswith(b"HTTP/1.")
        except OSError:
            return False

    def client(self, **kwargs: Any) -> Any:
        """A blocking botocore client on this server (for the tests' own checks)."""
        import botocore.session

        return botocore.session.get_session().create_client(
            "s3",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=kwargs.pop("access_key", ACCESS_KEY),
            aws_secret_access_key=kwargs.pop("secret_key", SECRET_KEY),
            **kwargs,
        )

    def new_bucket(self) -> str:
        name = f"hfs-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name

    def check_credentials(self) -> tuple[str, str]:
        """
        From now on this server checks signatures and keys (moto's own
        switch, ``/moto-api/reset-auth``): makes a user allowed every S3
        action and fires with its key and secret.
        """
        import botocore.session

        iam = botocore.session.get_session().create_client(
            "iam",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )
        iam.create_user(UserName="archiver")
        iam.put_user_policy(
            UserName="archiver",
            PolicyName="s3",
            PolicyDocument=(
                '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow",'
                ' "Action": "s3:*", "Resource": "*"}]}'
            ),
        )
        key = iam.create_access_key(UserName="archiver")["AccessKey"]
        with socket.create_connection(("127.0.0.1", self.port), 5) as s:
            s.sendall(
                b"POST /moto-api/reset-auth HTTP/1.0\r\nContent-Length: 1\r\n\r\n0"
            )
            assert s.recv(15).split(b" ")[1] == b"200"
        return key["AccessKeyId"], key["SecretAccessKey"]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


@dataclass
class S3Env:
    """The standard AWS environment for one test, pointing at ``server``."""

    server: MotoServer | None
    bucket: str
    home: Path

    def apply(self, monkeypatch: Any, **overrides: str | None) -> None:
        values: dict[str, str | None] = {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_ENDPOINT_URL_S3": self.server.url if self.server else None,
            "AWS_DEFAULT_REGION": REGION,
            # Nothing of this machine's own AWS set-up, and never the
            # instance metadata service: only 127.0.0.1 is ever asked.
            "AWS_CONFIG_FILE": str(self.home / "config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.home / "credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_ENDPOINT_URL": None,
            "AWS_PROFILE": None,
            "AWS_DEFAULT_PROFILE": None,
            "AWS_REGION": None,
            "AWS_SESSION_TOKEN": None,
            "AWS_CA_BUNDLE": None,
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": None,
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": None,
            "AWS_WEB_IDENTITY_TOKEN_FILE": None,
            "AWS_ROLE_ARN": None,
            "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": None,
            **overrides,
        }
        for name, value in values.items():
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
