"""`rtdecode monitor`: a local web page that watches a running daemon, as one more subscriber of its outputs.

`feed.py` subscribes to the daemon's PUB socket and keeps a bounded state (the last decodes, predicted-activity
windows, incoming-spike windows with `serve --publish-windows`, status and description); `recorded.py` puts a
replayed session's recorded behavior and spikes beside them; `server.py` (aiohttp, the `monitor` extra) serves
the page in `static/` and pushes the state to it.
Nothing here touches the daemon's input path except a `control` "describe" request.
"""
