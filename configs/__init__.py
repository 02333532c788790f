"""Built-in run configs (TOML), addressable by name: `rtdecode train --config small`."""
