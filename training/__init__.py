"""Offline training of Neuroformer models (PyTorch; the `[train]` extra). Installed as `rtdecode.training`."""
