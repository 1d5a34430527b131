"""fedfleet: federated training fleets on Kubernetes, and on one machine with no cluster."""

__version__ = "0.1.0"
