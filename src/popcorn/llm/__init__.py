"""LLM backends (providers, registry), prompts and the script parser."""
