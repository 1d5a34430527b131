"""The round driver shared by the operator and `fedfleet local run`.

`driver.RoundDriver` takes one step (observe the aggregator, ask `controller.core.decide`, act,
record) through three small ports (`ports.py`): the aggregator, the fleet of clients and the
round recorder. The operator and the local runner differ only in their adapters, so the two
cannot drift. Nothing here imports kubernetes or kopf.
"""
