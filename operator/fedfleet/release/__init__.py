"""Model release: the final model, its lineage, public key and model card pushed to an OCI
registry, with the in-toto statement attached as a signed (DSSE) attestation; and the pull
that checks all of it before anyone loads the model."""
