from tests.controller.test_operator_e2e import fleet_factory  # noqa: F401  (fixture)
from tests.kube.fixtures import kube_api, kubeconfig, real_kubeconfig, real_lane  # noqa: F401  (fixtures)
from tests.release.registry import registry  # noqa: F401  (fixture)
