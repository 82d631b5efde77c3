"""Measure llama.cpp (llama-cpp-python) decoding a GGUF of the same model, batch 1, greedy: the
CPU peer of the README's speed table. Run it in its own process, on a quiet machine.

Set-up (not a project dependency; a separate venv keeps its build apart):
    python3 -m venv .venv-llamacpp
    CMAKE_ARGS="-DGGML_NATIVE=ON" .venv-llamacpp/bin/pip install llama-cpp-python   # ~10 min build
    # its sdist carries vendor/llama.cpp/convert_hf_to_gguf.py: convert the bundled target
    python vendor/llama.cpp/convert_hf_to_gguf.py assets/models/target --outtype f32 --outfile target-f32.gguf
Then:
    .venv-llamacpp/bin/python tools/llamacpp_peer.py target-f32.gguf --tokens 256 --threads 2 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

PROMPT = "ROMEO:\nBut soft, what light through yonder window breaks?\n\nJULIET:\n"


def measure(path: str, tokens: int, threads: int) -> float:
    from llama_cpp import Llama

    llm = Llama(model_path=path, n_ctx=1024, n_threads=threads, n_threads_batch=threads, verbose=False)
    prompt = llm.tokenize(PROMPT.encode())
    llm.reset()
    produced, t_first = 0, None
    for _tok in llm.generate(prompt, top_k=1, temp=0.0, reset=True):
        produced += 1
        if produced == 1:
            t_first = time.perf_counter()  # decode rate: after the first token, as the engine's ITL
        if produced >= tokens:
            break
    return (produced - 1) / (time.perf_counter() - t_first)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("gguf")
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    measure(args.gguf, 16, args.threads)  # warm
    rates = [measure(args.gguf, args.tokens, args.threads) for _ in range(args.repeats)]
    print(json.dumps({"gguf": args.gguf.rsplit("/", 1)[-1], "threads": args.threads, "tokens": args.tokens,
                      "decode_tokens_per_s_median": statistics.median(rates), "min": min(rates), "max": max(rates)}))


if __name__ == "__main__":
    main()
