"""LLM backends: the interface, the providers and their registry, batching and retries (the
prompts and the script parser are the script stage's: :mod:`popcorn.writer`)."""
