from tests.release.registry import registry  # noqa: F401  (fixture)
