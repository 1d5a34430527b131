"""The data plane's server: one aggregator per training, running rounds over gRPC."""
