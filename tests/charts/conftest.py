from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """test_rbac.py reads the requests the operator made in the end-to-end tests: run it last."""
    last = [i for i in items if i.path.name == "test_rbac.py" and i.path.parent.name == "charts"]
    if last:
        items[:] = [i for i in items if i not in last] + last
