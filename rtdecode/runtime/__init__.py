"""Serving a model bundle without torch: bundle loading and validation, backends, and the Decoder.

bundle = Bundle.load("bundle/")            # manifest validated, graph hashes checked
decoder = Decoder(bundle, backend="auto")  # onnxruntime on CPU by default
decoder.decode(feeds)                      # behavior in the data's units
decoder.generate(feeds)                    # next-window spikes, KV-cached
"""

from rtdecode.runtime.bundle import Bundle, BundleError
from rtdecode.runtime.decoder import Decoder

__all__ = ["Bundle", "BundleError", "Decoder"]
