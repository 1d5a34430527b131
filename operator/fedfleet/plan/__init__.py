"""`fedfleet plan`: what a manifest will do before anything runs (checks, DP forecast, traffic)."""
