import shutil
from pathlib import Path

import pytest

from tests.kube.fixtures import kube_api, kubeconfig, real_lane  # noqa: F401  (fixtures)
from tests.provenance.chain import Chain, make_chain


@pytest.fixture(scope="session")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    """One signed 3-round training per test session; tests tamper with copies of it."""
    return make_chain(tmp_path_factory.mktemp("chain"), lineage={"pseudonymize": True})


@pytest.fixture
def chain(pristine: Chain, tmp_path: Path) -> Chain:
    state = tmp_path / "state"
    shutil.copytree(pristine.state, state)
    return Chain(state, pristine.key, pristine.log, pristine.status)
