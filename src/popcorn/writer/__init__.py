"""The script stage: a query in, a checked script out.

- :mod:`~popcorn.writer.queries`: one query checked, or a batch read from a file;
- :mod:`~popcorn.writer.prompts` and ``templates/``: the messages sent, per profile;
- :mod:`~popcorn.writer.parser` (with :mod:`~popcorn.writer.lenient_json`): a script recovered
  from whatever the LLM wrote;
- :mod:`~popcorn.writer.gate` and :mod:`~popcorn.writer.judge`: the quality gate on each answer;
- :mod:`~popcorn.writer.keys`: the inputs that key a script run;
- :mod:`~popcorn.writer.writer`: one query's attempts, recorded in its run folder;
- :mod:`~popcorn.writer.batch`: many queries, failures kept apart.

The LLM backends are :mod:`popcorn.llm`; retrieval for PE is :mod:`popcorn.retrieval`, which
never imports this package. Nothing is imported here, so ``import popcorn.writer.parser`` stays
light.
"""
