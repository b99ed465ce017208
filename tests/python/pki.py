"""Certificates for the transport tests, made at test time with the `openssl` command line: a
CA, a server certificate for `localhost`/127.0.0.1, and client certificates signed by the CA or
by a stranger's CA."""

from __future__ import annotations

import subprocess
from pathlib import Path


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


class Pki:
    def __init__(self, dir: Path) -> None:
        self.dir = dir
        self.ca = dir / "ca.pem"
        self.ca_key = dir / "ca-key.pem"
        self._self_signed_ca("Tidegate test CA", self.ca, self.ca_key)
        self.server_cert, self.server_key = self.issue(
            "server",
            "/CN=localhost",
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )

    def _self_signed_ca(self, name: str, cert: Path, key: Path) -> None:
        openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            cwd=self.dir,
        )

    def issue(
        self, name: str, subject: str, extensions: str, ca: Path | None = None,
        ca_key: Path | None = None,
    ) -> tuple[Path, Path]:
        """A key and a certificate for `subject` with `extensions` (openssl extfile lines)."""
        key = self.dir / f"{name}-key.pem"
        csr = self.dir / f"{name}.csr"
        cert = self.dir / f"{name}.pem"
        ext = self.dir / f"{name}.ext"
        ext.write_text(extensions)
        openssl(
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(key), "-out", str(csr), "-subj", subject,
            cwd=self.dir,
        )
        openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(ca or self.ca),
            "-CAkey", str(ca_key or self.ca_key), "-CAcreateserial", "-out", str(cert),
            "-days", "2", "-extfile", str(ext),
            cwd=self.dir,
        )
        return cert, key

    def client(self, cn: str) -> tuple[Path, Path]:
        """A client certificate with subject CN `cn`, signed by the test CA."""
        return self.issue(f"client-{cn}", f"/CN={cn}", "extendedKeyUsage=clientAuth\n")

    def stranger(self) -> tuple[Path, Path]:
        """A client certificate from a CA the server does not trust."""
        ca, key = self.dir / "stranger-ca.pem", self.dir / "stranger-ca-key.pem"
        self._self_signed_ca("Stranger CA", ca, key)
        return self.issue(
            "stranger", "/CN=stranger", "extendedKeyUsage=clientAuth\n", ca=ca, ca_key=key
        )

    def tls_listener(self, kind: str, port: int, extra: str = "") -> str:
        """A `[[listeners]]` entry of `kind` on 127.0.0.1:`port` with the server certificate."""
        return (
            f'[[listeners]]\nkind = "{kind}"\nbind = "127.0.0.1:{port}"\n'
            f'cert = "{self.server_cert}"\nkey = "{self.server_key}"\n{extra}\n'
        )
