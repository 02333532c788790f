"""rtdecode: real-time Neuroformer decoding for closed-loop neuroscience rigs.

Importing this package is cheap and never imports torch: the serve path (tokenizer, rolling window, runtime,
daemon, client) runs on numpy + onnxruntime. Training lives in `rtdecode.training`, export in `rtdecode.export`.
"""

__version__ = "0.1.0"
