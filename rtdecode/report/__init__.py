"""`rtdecode evaluate`: the science of a model made visible, as a self-contained HTML report.

One module a section, each computing numbers with numpy and drawing with matplotlib:
* `decoding`   — behavior decoding vs ridge, an MLP and a shuffle control, on the same held-out windows;
* `generation` — generated activity vs the recorded one and a per-neuron-rate Poisson baseline;
* `embedding`  — contrastive latents: 3-D projection and linear decodability of speed;
* `mlp`        — the small numpy MLP baseline;
* `figures`    — every plot;
* `document`   — the HTML + JSON writer (every number in the HTML comes from the JSON);
* `run_sections` — connectivity and embeddings, which need the PyTorch run (attention maps, latents);
* `evaluate`   — the orchestration behind `rtdecode evaluate` and the demo's report folder.
Decoding and generation run the exported bundle, so the report scores the artefact that is served.
"""
