"""Stage 3, the writers: the local batched decode loop (`decode`: preallocated cache, shared prefixes,
continuous batching, per-row seeded sampling) and the story writers built on it or on an
OpenAI-compatible server (`generate`)."""
