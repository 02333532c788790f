"""Sessions and tokens: the recording in memory, the one numpy tokenizer (offline) and its rolling form (live),
the token budget, time alignment of frames and behavior, train/test splits and the on-disk token store."""
