"""The typed, numpy-only contract shared by training, export and serving: run config, normalisation,
per-window inputs and the metrics every result is scored with. Nothing here imports torch."""
