"""A real OCI registry for release tests: the CNCF distribution registry (Debian's
`docker-registry` package) on a loopback port, storage in the test's tmp_path."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.dataplane.harness import free_port

REGISTRY = shutil.which("docker-registry") or shutil.which("registry")


def blob_path(storage: Path, digest: str) -> Path:
    """Where the registry's filesystem driver keeps a blob (to tamper with it behind its back)."""
    hexdigest = digest.removeprefix("sha256:")
    return storage / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    """host:port of a running registry (plain HTTP, loopback only), storing under tmp_path/registry."""
    if REGISTRY is None:
        pytest.skip("no docker-registry binary (apt-get install docker-registry; .ci/run installs it)")
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "version": 0.1,
                "log": {"level": "warn"},
                "storage": {"filesystem": {"rootdirectory": str(tmp_path / "registry")}},
                "http": {"addr": f"127.0.0.1:{port}"},
            }
        )
    )
    log = (tmp_path / "registry.log").open("wb")
    process = subprocess.Popen([REGISTRY, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        until = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                if time.monotonic() > until or process.poll() is not None:
                    raise RuntimeError((tmp_path / "registry.log").read_text()[-2000:]) from None
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)
        log.close()
