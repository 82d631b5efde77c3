"""One clear sentence for every way a remote request can fail."""

from __future__ import annotations

import openai

MAX_SERVER_TEXT = 300  # server messages are untrusted: shown, but cut short


def _server_text(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    msg = None
    if isinstance(body, dict):
        inner = body.get("error", body)
        msg = inner.get("message") if isinstance(inner, dict) else inner
        msg = msg if isinstance(msg, str) else body.get("detail") if isinstance(body.get("detail"), str) else None
    text = msg or getattr(exc, "message", None) or str(exc)
    text = " ".join(str(text).split())
    return text[:MAX_SERVER_TEXT] + ("…" if len(text) > MAX_SERVER_TEXT else "")


def _kind(exc: BaseException) -> set[str]:
    """Class names along the MRO and the cause chain (httpx and httpx2 name theirs alike)."""
    names: set[str] = set()
    seen = 0
    while exc is not None and seen < 5:
        names |= {c.__name__ for c in type(exc).__mro__}
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return names


def describe_error(exc: Exception, spec, model: str | None, *, tokens_so_far: int = 0) -> str:
    url = spec.base_url
    where = f" after {tokens_so_far} tokens" if tokens_so_far else ""
    if isinstance(exc, openai.AuthenticationError):
        return f"{url} refused the API key (HTTP 401): {_server_text(exc)}"
    if isinstance(exc, openai.PermissionDeniedError):
        return f"{url} denied access (HTTP 403): {_server_text(exc)}"
    if isinstance(exc, openai.NotFoundError):
        return f"model {model!r} not found at {url} (HTTP 404): {_server_text(exc)}"
    if isinstance(exc, openai.APIStatusError):
        return f"{url} answered HTTP {exc.status_code}: {_server_text(exc)}"
    names = _kind(exc)
    if isinstance(exc, openai.APITimeoutError) or "TimeoutException" in names or "TimeoutError" in names:
        return f"timed out: {url} sent nothing for {spec.read_timeout_s:g} s{where}"
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        detail = " ".join(str(cause).split()) if cause is not None else "no connection"
        if "ConnectError" in names:
            return f"cannot connect to {url}: {detail[:MAX_SERVER_TEXT]}"
        return f"lost the connection to {url}{where}: {detail[:MAX_SERVER_TEXT]}"
    if "RemoteProtocolError" in names or "ReadError" in names or "NetworkError" in names or "StreamError" in names:
        return f"the server at {url} closed the connection mid-stream{where}: {' '.join(str(exc).split())[:MAX_SERVER_TEXT]}"
    if isinstance(exc, openai.APIError):
        return f"{url} reported an error{where}: {_server_text(exc)}"
    if isinstance(exc, (ValueError, TypeError, AttributeError, KeyError)):
        return f"malformed stream chunk from {url}{where}: {type(exc).__name__}: {str(exc)[:MAX_SERVER_TEXT]}"
    return f"request to {url} failed{where}: {type(exc).__name__}: {str(exc)[:MAX_SERVER_TEXT]}"
