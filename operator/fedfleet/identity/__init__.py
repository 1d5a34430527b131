"""Per-training identities: a CA, the aggregator's server certificate, one client certificate per
site client and the controller's, named by SPIFFE-style URIs (see `names.py`)."""
