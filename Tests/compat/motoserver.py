"""moto's standalone server (PyPI `moto[server]`) as the stand-in for AWS IAM and STS.

Started on a free loopback port, stopped by its pid. `start()` creates, unauthenticated, two IAM
users with an allow-everything inline policy and an access key each: `coffer-root` (the key Coffer
is configured with) and `inspector` (what the tests look with, through boto3). Then it turns on
moto's request authentication (`/moto-api/reset-auth` with 0: every later call must be signed with
SigV4 by a known key, and moto recomputes the signature with botocore and refuses a mismatch with
`SignatureDoesNotMatch`), so every request Coffer sends from then on is checked.
"""
import json
import os
import shutil
import subprocess
import tempfile
import time

import boto3
import botocore.config
import requests

from conftest import free_port, stop_process

ALLOW_ALL = json.dumps({"Version": "2012-10-17",
                        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})
ACCOUNT = "123456789012"


def moto_server_bin():
    for candidate in (shutil.which("moto_server"), os.path.join(os.path.dirname(os.sys.executable), "moto_server")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError("moto_server not found: pip install 'moto[server]' (the Makefile's venv has it)")


class MotoServer:
    def __init__(self):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(prefix="moto-", suffix=".log", delete=False)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env["AWS_DEFAULT_REGION"] = "us-east-1"
        self.proc = subprocess.Popen([moto_server_bin(), "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                requests.get(self.url + "/moto-api/", timeout=1)
                break
            except requests.exceptions.ConnectionError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto_server did not start:\n{self.output()}")
                time.sleep(0.05)
        setup = self.client("iam", "AKIDSETUP", "setup-secret")
        self.root = self._admin(setup, "coffer-root")
        self.inspector = self._admin(setup, "inspector")
        r = requests.post(self.url + "/moto-api/reset-auth", data=b"0", timeout=5)
        r.raise_for_status()

    @staticmethod
    def _admin(iam, name):
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName="all", PolicyDocument=ALLOW_ALL)
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]

    def client(self, service, access_key=None, secret_key=None, token=None):
        """A boto3 client for `service` on this server (the inspector's key unless given)."""
        if access_key is None:
            access_key, secret_key = self.inspector
        return boto3.client(service, endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                            aws_session_token=token,
                            config=botocore.config.Config(retries={"max_attempts": 1}))

    def output(self):
        with open(self.log.name, errors="replace") as f:
            return f.read()

    def stop(self):
        stop_process(self.proc, 10)
