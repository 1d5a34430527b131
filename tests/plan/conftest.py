from tests.kube.fixtures import kube_api, kubeconfig, real_lane  # noqa: F401  (fixtures)
