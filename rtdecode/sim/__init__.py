"""The built-in ground-truth circuit: spikes, stimulus and behavior whose causes are known."""
