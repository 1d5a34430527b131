"""Model lineage: a signed hash chain of what every round did, checked by `fedfleet lineage verify`.

`records` defines a record and its digest, `signing` the Ed25519 keys, `ledger` appends records
beside the checkpoints, `verify` and `history` check and show a state directory, `export` writes
an in-toto statement and a model card, `policy` is a site's check of the base model.
"""
