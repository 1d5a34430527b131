"""A real Kubernetes control plane for the "real" test lane, from KUBEBUILDER_ASSETS (the envtest
convention; `make kube-assets` builds the folder): etcd, kube-apiserver (RBAC, the default
admission plugins, certificates made here), kube-controller-manager (garbage collector,
namespace lifecycle, ServiceAccounts and their tokens) and kube-scheduler, on loopback ports.
Nodes and the pods bound to them are the test kubelet's (tests/kube/kubelet.py)."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ASSETS_VARIABLE = "KUBEBUILDER_ASSETS"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "helm")
HOW_TO_ENABLE = (
    "real control plane lane: set KUBEBUILDER_ASSETS=$(make -s kube-assets) (needs Go >= 1.26) "
    "or point it at a setup-envtest folder with helm and kube-controller-manager/kube-scheduler added"
)
SERVICE_IP_RANGE = "10.0.0.0/24"
START_TIMEOUT = 120.0


def assets() -> Path | None:
    """The assets folder when KUBEBUILDER_ASSETS names one with every binary, else None."""
    folder = os.environ.get(ASSETS_VARIABLE)
    if not folder:
        return None
    path = Path(folder)
    missing = [b for b in BINARIES if not (path / b).is_file()]
    if missing:
        raise RuntimeError(f"{ASSETS_VARIABLE}={folder} lacks {', '.join(missing)} (run make kube-assets)")
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- certificates -----------------------------------------------------------------------------------
def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _issue(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None = None,
    sans: list[x509.GeneralName] | None = None,
    ca: bool = False,
) -> bytes:
    now = datetime.datetime.now(tz=datetime.UTC)
    issuer_name, issuer_key = issuer or (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if not ca:
        usage = [ExtendedKeyUsageOID.SERVER_AUTH] if sans else [ExtendedKeyUsageOID.CLIENT_AUTH]
        builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _name(common: str, organisation: str = "") -> x509.Name:
    parts = [x509.NameAttribute(NameOID.COMMON_NAME, common)]
    if organisation:
        parts.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation))
    return x509.Name(parts)


def write_pki(folder: Path) -> None:
    """A test CA; the API server's serving certificate; an admin client (system:masters); the
    ServiceAccount token signing key."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("fedfleet-test-ca")
    (folder / "ca.crt").write_bytes(_issue(ca_name, ca_key, ca=True))
    server_key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.DNSName("kubernetes.default.svc"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
    ]
    (folder / "apiserver.crt").write_bytes(
        _issue(_name("kube-apiserver"), server_key, (ca_name, ca_key), sans)
    )
    (folder / "apiserver.key").write_bytes(_pem_key(server_key))
    admin_key = ec.generate_private_key(ec.SECP256R1())
    (folder / "admin.crt").write_bytes(_issue(_name("admin", "system:masters"), admin_key, (ca_name, ca_key)))
    (folder / "admin.key").write_bytes(_pem_key(admin_key))
    sa_key = ec.generate_private_key(ec.SECP256R1())
    (folder / "sa.key").write_bytes(_pem_key(sa_key))
    (folder / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def kubeconfig_text(url: str, ca: bytes, user: dict[str, str]) -> str:
    encode = lambda data: base64.b64encode(data).decode()  # noqa: E731
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "test",
            "clusters": [
                {"name": "test", "cluster": {"server": url, "certificate-authority-data": encode(ca)}}
            ],
            "users": [{"name": "test", "user": user}],
            "contexts": [
                {"name": "test", "context": {"cluster": "test", "user": "test", "namespace": "default"}}
            ],
        }
    )


# -- processes --------------------------------------------------------------------------------------
class ControlPlane:
    """etcd, kube-apiserver, kube-controller-manager and kube-scheduler as child processes."""

    def __init__(self, binaries: Path, root: Path) -> None:
        self.binaries = binaries
        self.root = root
        self.pki = root / "pki"
        self.logs = root / "logs"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.url = ""
        self.kubeconfig = root / "admin.kubeconfig"

    def start(self) -> ControlPlane:
        self.logs.mkdir(parents=True, exist_ok=True)
        write_pki(self.pki)
        try:
            self._start_etcd()
            self._start_apiserver()
            self._start("kube-controller-manager", self._controller_manager_args())
            self._start("kube-scheduler", self._scheduler_args())
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, name: str, args: list[str]) -> None:
        with (self.logs / f"{name}.log").open("ab") as out:
            self.processes[name] = subprocess.Popen(
                [str(self.binaries / name), *args], stdout=out, stderr=subprocess.STDOUT
            )

    def _start_etcd(self) -> None:
        self.etcd_url = f"http://127.0.0.1:{free_port()}"
        self._start(
            "etcd",
            [
                f"--data-dir={self.root / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{free_port()}",
            ],
        )

    def _start_apiserver(self) -> None:
        port = free_port()
        self.url = f"https://127.0.0.1:{port}"
        pki = self.pki
        self._start(
            "kube-apiserver",
            [
                f"--etcd-servers={self.etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                "--endpoint-reconciler-type=none",  # loopback cannot be the kubernetes Service endpoint
                f"--secure-port={port}",
                f"--cert-dir={self.root / 'apiserver-certs'}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_IP_RANGE}",
                "--authorization-mode=Node,RBAC",
                "--allow-privileged=false",
                "--profiling=false",
            ],
        )
        self.kubeconfig.write_text(
            kubeconfig_text(
                self.url,
                (pki / "ca.crt").read_bytes(),
                {
                    "client-certificate-data": base64.b64encode((pki / "admin.crt").read_bytes()).decode(),
                    "client-key-data": base64.b64encode((pki / "admin.key").read_bytes()).decode(),
                },
            )
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        context.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        until = time.monotonic() + START_TIMEOUT
        last = ""
        while time.monotonic() < until:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited {process.returncode}: {self.log_tail(name)}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", context=context, timeout=5) as reply:
                    if reply.status == 200:
                        return
            except OSError as err:
                last = str(err)
            time.sleep(0.5)
        raise TimeoutError(
            f"kube-apiserver not ready in {START_TIMEOUT:.0f}s ({last}): {self.log_tail('kube-apiserver')}"
        )

    def _controller_manager_args(self) -> list[str]:
        return [
            f"--kubeconfig={self.kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            # a PVC's kubernetes.io/pvc-protection finalizer is lifted by pvc-protection; a claim binds
            # to a PersistentVolume a test makes for it through persistentvolume-binder
            "--controllers=garbagecollector,namespace,serviceaccount,serviceaccount-token,pvc-protection,"
            "persistentvolume-binder",
            f"--service-account-private-key-file={self.pki / 'sa.key'}",
            f"--root-ca-file={self.pki / 'ca.crt'}",
            "--use-service-account-credentials=true",
            "--leader-elect=false",
            "--concurrent-gc-syncs=5",
        ]

    def _scheduler_args(self) -> list[str]:
        return [
            f"--kubeconfig={self.kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            "--leader-elect=false",
        ]

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """helm against this control plane, its state and caches kept under the test's folder."""
        home = self.root / "helm"
        env = os.environ | {
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
            "KUBECONFIG": str(self.kubeconfig),
        }
        run = subprocess.run(
            [str(self.binaries / "helm"), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        if check and run.returncode != 0:
            raise RuntimeError(f"helm {' '.join(args)} failed: {run.stderr}")
        return run

    def stop(self) -> None:
        for name in reversed(list(self.processes)):
            process = self.processes[name]
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self.processes.clear()
        shutil.rmtree(self.root / "etcd", ignore_errors=True)
