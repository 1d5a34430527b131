"""What the operator decides, as pure functions of spec and observations (no kopf, no grpc)."""
