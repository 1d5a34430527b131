"""The embedded default: a whole federation as local processes, driven by the same controller core."""
