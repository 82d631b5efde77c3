"""OpenAI-compatible HTTP API over one engine (FastAPI): models, chat, completions, health, metrics.

Streaming responses are Server-Sent Events: `data: {chunk}` lines with one id per response,
a role delta then content deltas (chat), a finish_reason per choice, an optional usage chunk,
and `data: [DONE]`. A client that goes away mid-stream cancels the handler; leaving the
Generation context then aborts its engine requests before the engine's next step.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.serve.metrics import CONTENT_TYPE
from app.serve.openai_schema import APIError, ChatCompletionRequest, CompletionRequest, parse, to_sampling
from app.serve.session import Generation, ServeSession, SubRequest
from engine import events as ev
from engine.config import GenerateRequest

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 2 * 1024 * 1024
SERVE_TAG = "serve"
FINISH = {ev.FinishReason.STOP: "stop", ev.FinishReason.LENGTH: "length"}


def error_response(err: APIError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


def build_app(session: ServeSession) -> FastAPI:
    app = FastAPI(title="Inference Workbench", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.session = session

    @app.exception_handler(APIError)
    async def _api_error(_request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found" if exc.status_code == 404 else "invalid_request_error"
        return error_response(APIError(exc.status_code, str(exc.detail), type=kind))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error answering a request")
        return error_response(APIError(500, f"internal error: {type(exc).__name__}", type="server_error"))

    @app.get("/health")
    async def health() -> Response:
        if session.model_info is None or not session.engine.is_alive:
            return Response(status_code=503)
        return Response(status_code=200)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(session.metrics.exposition(), media_type=CONTENT_TYPE)

    def model_card() -> dict:
        info = session.model_info
        return {"id": session.model_id, "object": "model", "created": 0, "owned_by": "workbench",
                "root": info.name_or_path if info else None}

    @app.get("/v1/models")
    async def models(request: Request) -> JSONResponse:
        _authorise(session, request)
        data = [model_card()] if session.model_id is not None else []
        return JSONResponse({"object": "list", "data": data})

    @app.get("/v1/models/{model:path}")
    async def model(request: Request, model: str) -> JSONResponse:
        _authorise(session, request)
        if session.model_id is None or not session.accepts_model(model):
            raise APIError(404, f"The model `{model}` does not exist", param="model", code="model_not_found")
        return JSONResponse(model_card())

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        _authorise(session, request)
        body = parse(ChatCompletionRequest, await _read_body(request))
        session.check_available(body.model)
        rid = session.new_request_id("chatcmpl")
        defaults = session.defaults()
        subs = [SubRequest(i, 0, _engine_request(messages=body.message_pairs(),
                                                 sampling=to_sampling(body, defaults, i),
                                                 request_id=f"{rid}-{i}", tag=SERVE_TAG))
                for i in range(body.n)]
        return await _answer(session, request, body, subs, rid, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        _authorise(session, request)
        body = parse(CompletionRequest, await _read_body(request))
        session.check_available(body.model)
        prompts = body.prompts(session.model_info.vocab_size)
        rid = session.new_request_id("cmpl")
        defaults = session.defaults()
        subs = []
        for p, prompt in enumerate(prompts):
            for j in range(body.n):
                i = p * body.n + j
                text, ids = (prompt, None) if isinstance(prompt, str) else (None, prompt)
                subs.append(SubRequest(i, p, _engine_request(prompt=text, prompt_token_ids=ids,
                                                             sampling=to_sampling(body, defaults, j),
                                                             request_id=f"{rid}-{i}", tag=SERVE_TAG)))
        return await _answer(session, request, body, subs, rid, chat=False)

    return app


def _engine_request(**fields) -> GenerateRequest:
    try:
        return GenerateRequest(**fields)
    except ValueError as exc:  # the engine's own checks, e.g. a malformed message
        raise APIError(400, str(exc)) from None


def _authorise(session: ServeSession, request: Request) -> None:
    if not session.api_key:
        return
    given = request.headers.get("authorization", "")
    scheme, _, token = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), session.api_key.encode()):
        raise APIError(401, "Incorrect API key provided", code="invalid_api_key")


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
        raise APIError(413, f"the request body is larger than {MAX_BODY_BYTES} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise APIError(413, f"the request body is larger than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _wait_disconnect(request: Request) -> None:
    """Return when the client closes the connection (the body is already read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _answer(session: ServeSession, request: Request, body, subs: list[SubRequest], rid: str, *,
                  chat: bool) -> Response:
    gen = session.generation(subs)
    await gen.__aenter__()  # 429 when the queue is full (nothing reserved then)
    session.client_started()
    done = _Once(gen, session)
    handed_over = False
    try:
        await _until_disconnect(request, gen.started())
        if body.stream:
            response = _GenerationStream(_stream(session, gen, body, rid, chat), done)
            handed_over = True  # the response ends the generation from here
            return response
        return await _until_disconnect(request, _complete(session, gen, body, rid, chat))
    finally:
        if not handed_over:
            await done()


class _Once:
    """End a generation exactly once: abort what is unfinished, release admission, count the
    client out."""

    def __init__(self, gen: Generation, session: ServeSession) -> None:
        self.gen, self.session, self.ran = gen, session, False

    async def __call__(self) -> None:
        if self.ran:
            return
        self.ran = True
        await self.gen.__aexit__(None, None, None)
        self.session.client_ended()


class _GenerationStream(StreamingResponse):
    """An SSE response that ends its generation however the response ends: finished, client
    gone (Starlette cancels the stream on http.disconnect), or failed, even when the body
    iterator never started."""

    def __init__(self, content, done: _Once) -> None:
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._done = done

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._done()


async def _until_disconnect(request: Request, work):
    """Run work; if the client disconnects first, cancel it (aborting its engine requests)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_disconnect(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        task.cancel()
        raise APIError(499, "the client closed the connection", code="client_closed")
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()


def _usage(gen: Generation, subs: list[SubRequest]) -> dict:
    prompt = sum(gen.prompt_tokens.get(s.index, 0) for s in subs if s.index == _first_choice(subs, s))
    completion = sum(len(f.token_ids) for f in gen.finished.values())
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _first_choice(subs: list[SubRequest], sub: SubRequest) -> int:
    """The first choice of sub's prompt: its prompt is counted once in usage, whatever n is."""
    return min(s.index for s in subs if s.prompt_index == sub.prompt_index)


def _failure(fin: ev.RequestFinished) -> APIError | None:
    if fin.reason is ev.FinishReason.ERROR:
        return APIError(500, f"generation failed: {fin.error or 'engine error'}", type="server_error")
    if fin.reason is ev.FinishReason.CANCELLED:
        why = f": {fin.error}" if fin.error else ""
        return APIError(503, f"the request was cancelled by the engine{why}", type="server_error",
                        code="cancelled")
    return None


async def _complete(session: ServeSession, gen: Generation, body, rid: str, chat: bool) -> JSONResponse:
    async for _index, _event in gen.events():
        pass
    for fin in gen.finished.values():
        err = _failure(fin)
        if err is not None:
            raise err
    choices = []
    for sub in gen.subs:
        fin = gen.finished[sub.index]
        reason = FINISH[fin.reason]
        if chat:
            choice = {"index": sub.index, "message": {"role": "assistant", "content": fin.text},
                      "logprobs": None, "finish_reason": reason}
        else:
            choice = {"index": sub.index, "text": fin.text, "logprobs": None, "finish_reason": reason}
        if body.return_token_ids:
            choice["token_ids"] = list(fin.token_ids)
        choices.append(choice)
    return JSONResponse({
        "id": rid, "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
        "model": session.model_id, "choices": choices, "usage": _usage(gen, gen.subs),
    })


def _sse(payload: dict | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


async def _stream(session: ServeSession, gen: Generation, body, rid: str, chat: bool):
    created = int(time.time())
    obj = "chat.completion.chunk" if chat else "text_completion"
    model = session.model_id
    extra = {"usage": None} if body.include_usage else {}

    def chunk(index: int, *, text: str | None = None, role: bool = False, finish: str | None = None,
              token_ids: list[int] | None = None) -> bytes:
        if chat:
            delta: dict = {}
            if role:
                delta = {"role": "assistant", "content": ""}
            elif text is not None:
                delta = {"content": text}
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish}
        if token_ids is not None:
            choice["token_ids"] = token_ids
        return _sse({"id": rid, "object": obj, "created": created, "model": model, "choices": [choice], **extra})

    if chat:
        yield b"".join(chunk(sub.index, role=True) for sub in gen.subs)
    out: list[bytes] = []  # chunks of events already queued go out in one write
    async for index, event in gen.events():
        if isinstance(event, ev.TokensGenerated):
            if event.text or (body.return_token_ids and event.token_ids):
                ids = list(event.token_ids) if body.return_token_ids else None
                out.append(chunk(index, text=event.text, token_ids=ids))
        elif isinstance(event, ev.RequestFinished):
            err = _failure(event)
            if err is not None:
                yield b"".join(out) + _sse(err.body()) + _sse("[DONE]")
                return
            out.append(chunk(index, finish=FINISH[event.reason]))
        if out and gen.queue.empty():
            yield b"".join(out)
            out = []
    if out:
        yield b"".join(out)
    if body.include_usage:
        yield _sse({"id": rid, "object": obj, "created": created, "model": model, "choices": [],
                    "usage": _usage(gen, gen.subs)})
    yield _sse("[DONE]")
