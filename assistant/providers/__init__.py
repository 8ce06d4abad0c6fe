"""The model service behind an answer, along the data flow of its stream.

values.py             what a provider yields: text, tool calls, then one Finish, as stored
errors.py             ProviderError: every failure upstream, in terms safe to show the user
sse.py                the data lines of a streamed chat completion, parsed and checked
openai_compatible.py  the only importer of openai: any OpenAI-compatible server
demo.py               the offline demo model (demo_personas.py: as the shipped assistants)
configured.py         the provider this process uses, built on first use
"""
