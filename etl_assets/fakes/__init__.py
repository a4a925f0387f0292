"""Loopback fakes of the services we talk to (an OpenAI-compatible embeddings API, a Qdrant
REST server), served on 127.0.0.1 by real sockets so that the real httpx, openai and
qdrant-client code paths run against them. Used by the tests, the benchmarks and the scripts;
never by the pipeline itself."""
