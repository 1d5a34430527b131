from tests.kube.fixtures import kube_api, kubeconfig  # noqa: F401  (fixtures)
