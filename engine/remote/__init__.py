"""Remote engines: any OpenAI-compatible server (vLLM, SGLang, TGI, llama.cpp, Ollama,
`transformers serve`) behind the local engine's surface, its /metrics under our names, and
launch profiles that start, health-check and stop a server."""

from engine.remote.backend import LAUNCH_FLAGS_REASON, RemoteBackend, RemoteSpec

__all__ = ["LAUNCH_FLAGS_REASON", "RemoteBackend", "RemoteSpec"]
