#!/usr/bin/env python3
"""One call through an official LLM SDK (openai or anthropic), for the end-to-end tests.

Usage: .venv/bin/python tests/sdk/sdk_client.py < request.json

stdin holds one JSON object:
  sdk        "openai" | "anthropic"
  base_url   "http://127.0.0.1:PORT" (the OpenAI client gets base_url + "/v1")
  api        "chat" | "responses" (openai) | "messages" (anthropic)
  stream     bool (default false); a stream is consumed to its end
  model      model name (default "demo-model")
  messages   chat / messages: the conversation
  input      responses: a string or a list of input items
  system     optional: a system message (chat), `system` (messages), `instructions` (responses)
  max_tokens optional: max_tokens (chat, messages; messages defaults to 1024) or
             max_output_tokens (responses)
  tools      optional: passed through as `tools`
  headers    optional: extra request headers (e.g. {"x-demo-scenario": "pii"})
  extra      optional: further keyword arguments for the create call, passed through
  timeout    optional: seconds (default 30), the SDK's timeout: it bounds each connect, read
             and write, not the whole call (a slow but steady stream is not cut)

stdout gets ONE JSON line:
  success:   {"ok": true, "text": "<answer text>", "events": N, "model": ..., "stop_reason": ...,
              "tool_calls": [{"name": ..., "arguments": <parsed json, or the raw string>}]}
             (events = stream events consumed, 0 when not streaming)
  API error: {"ok": false, "error_class": "BadRequestError", "status": 400, "code": ...,
              "type": ..., "message": ..., "request_id": ..., "request_id_header": ...}
             code: error.code from the body, else Anthropic's error.details.error_code;
             message: error.message from the body, else the SDK's message;
             request_id: from the body (top level or inside error); request_id_header: the
             x-request-id / request-id response header. Errors without an HTTP status (an error
             event inside a stream, a connection failure or timeout) have no "status".
  other:     {"ok": false, "error_class": "<exception class>", "message": "..."}
The exit status is 0 in all these cases (2 only if stdout itself cannot be written).
"""

import json
import sys
import warnings

# The SDKs warn (on stderr) about deprecated model names; test model names are arbitrary.
warnings.filterwarnings("ignore", category=DeprecationWarning)


def out(obj):
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def parsed(arguments):
    """Tool-call arguments as JSON when they parse, else the raw string."""
    if not isinstance(arguments, str):
        return arguments
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


def opt(req, key, target, into):
    if req.get(key) is not None:
        into[target] = req[key]


# ---------------------------------------------------------------- OpenAI Chat Completions


def openai_chat(client, req):
    messages = list(req.get("messages") or [])
    if req.get("system") is not None:
        messages.insert(0, {"role": "system", "content": req["system"]})
    kwargs = {"model": req.get("model", "demo-model"), "messages": messages}
    opt(req, "max_tokens", "max_tokens", kwargs)
    opt(req, "tools", "tools", kwargs)
    kwargs.update(req.get("extra") or {})
    headers = req.get("headers") or None
    if not req.get("stream"):
        resp = client.chat.completions.create(**kwargs, extra_headers=headers)
        choice = resp.choices[0] if resp.choices else None
        message = choice.message if choice else None
        calls = [
            {"name": c.function.name, "arguments": parsed(c.function.arguments)}
            for c in ((message.tool_calls if message else None) or [])
            if getattr(c, "function", None) is not None
        ]
        return {
            "text": (message.content if message else None) or "",
            "events": 0,
            "model": resp.model,
            "stop_reason": choice.finish_reason if choice else None,
            "tool_calls": calls,
        }
    text, events, model, stop = [], 0, None, None
    calls = {}  # index -> [name, arguments]
    stream = client.chat.completions.create(**kwargs, stream=True, extra_headers=headers)
    for chunk in stream:
        events += 1
        model = chunk.model or model
        for choice in chunk.choices or []:
            if choice.index != 0:
                continue
            delta = choice.delta
            if delta is not None and delta.content:
                text.append(delta.content)
            for tc in (delta.tool_calls if delta is not None else None) or []:
                slot = calls.setdefault(tc.index, ["", ""])
                if tc.function is not None:
                    slot[0] += tc.function.name or ""
                    slot[1] += tc.function.arguments or ""
            if choice.finish_reason:
                stop = choice.finish_reason
    return {
        "text": "".join(text),
        "events": events,
        "model": model,
        "stop_reason": stop,
        "tool_calls": [
            {"name": n, "arguments": parsed(a)} for _, (n, a) in sorted(calls.items())
        ],
    }


# ---------------------------------------------------------------- OpenAI Responses


def response_calls(output):
    return [
        {"name": item.name, "arguments": parsed(item.arguments)}
        for item in output or []
        if getattr(item, "type", None) == "function_call"
    ]


def openai_responses(client, req):
    kwargs = {"model": req.get("model", "demo-model"), "input": req.get("input", "")}
    opt(req, "system", "instructions", kwargs)
    opt(req, "max_tokens", "max_output_tokens", kwargs)
    opt(req, "tools", "tools", kwargs)
    kwargs.update(req.get("extra") or {})
    headers = req.get("headers") or None
    if not req.get("stream"):
        resp = client.responses.create(**kwargs, extra_headers=headers)
        return {
            "text": resp.output_text or "",
            "events": 0,
            "model": resp.model,
            "stop_reason": resp.status,
            "tool_calls": response_calls(resp.output),
        }
    text, events, final, done_items = [], 0, None, []
    stream = client.responses.create(**kwargs, stream=True, extra_headers=headers)
    for event in stream:
        events += 1
        kind = getattr(event, "type", None)
        if kind == "response.output_text.delta":
            text.append(event.delta)
        elif kind == "response.output_item.done":
            done_items.append(event.item)
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            final = event.response
        elif kind == "error":
            return {
                "ok": False,
                "error_class": "StreamErrorEvent",
                "code": getattr(event, "code", None),
                "message": getattr(event, "message", None),
                "events": events,
            }
    return {
        "text": "".join(text),
        "events": events,
        "model": final.model if final is not None else None,
        "stop_reason": final.status if final is not None else None,
        "tool_calls": response_calls(final.output if final is not None else done_items),
    }


# ---------------------------------------------------------------- Anthropic Messages


def anthropic_messages(client, req):
    kwargs = {
        "model": req.get("model", "demo-model"),
        "messages": req.get("messages") or [],
        "max_tokens": req.get("max_tokens") or 1024,
    }
    opt(req, "system", "system", kwargs)
    opt(req, "tools", "tools", kwargs)
    kwargs.update(req.get("extra") or {})
    headers = req.get("headers") or None
    if not req.get("stream"):
        resp = client.messages.create(**kwargs, extra_headers=headers)
        blocks = resp.content or []
        return {
            "text": "".join(b.text for b in blocks if b.type == "text"),
            "events": 0,
            "model": resp.model,
            "stop_reason": resp.stop_reason,
            "tool_calls": [
                {"name": b.name, "arguments": b.input} for b in blocks if b.type == "tool_use"
            ],
        }
    text, events, model, stop = [], 0, None, None
    tools = {}  # block index -> [name, partial json]
    stream = client.messages.create(**kwargs, stream=True, extra_headers=headers)
    for event in stream:
        events += 1
        kind = event.type
        if kind == "message_start":
            model = event.message.model
        elif kind == "content_block_start" and event.content_block.type == "tool_use":
            tools[event.index] = [event.content_block.name, ""]
        elif kind == "content_block_delta":
            if event.delta.type == "text_delta":
                text.append(event.delta.text)
            elif event.delta.type == "input_json_delta" and event.index in tools:
                tools[event.index][1] += event.delta.partial_json
        elif kind == "message_delta":
            stop = event.delta.stop_reason or stop
    return {
        "text": "".join(text),
        "events": events,
        "model": model,
        "stop_reason": stop,
        "tool_calls": [
            {"name": n, "arguments": parsed(a) if a else {}} for _, (n, a) in sorted(tools.items())
        ],
    }


# ---------------------------------------------------------------- errors


def full_body(exc):
    """The decoded error response body (the whole of it), else the SDK's `body`."""
    response = getattr(exc, "response", None)
    if response is not None:
        try:
            return response.json()
        except Exception:  # not JSON, or not readable
            pass
    return getattr(exc, "body", None)


def api_error(exc):
    body = full_body(exc)
    err = body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
    if not isinstance(err, dict):
        err = {}
    outer = body if isinstance(body, dict) else {}
    code = err.get("code")
    if code is None and isinstance(err.get("details"), dict):
        code = err["details"].get("error_code")
    message = err.get("message")
    if not isinstance(message, str):
        message = getattr(exc, "message", None) or str(exc)
    result = {"ok": False, "error_class": type(exc).__name__}
    status = getattr(exc, "status_code", None)
    if status is not None:
        result["status"] = status
    result.update({
        "code": code,
        "type": err.get("type"),
        "message": message,
        "request_id": outer.get("request_id") or err.get("request_id"),
    })
    response = getattr(exc, "response", None)
    if response is not None:
        headers = response.headers
        result["request_id_header"] = headers.get("x-request-id") or headers.get("request-id")
    return result


def main():
    try:
        req = json.loads(sys.stdin.read())
        if not isinstance(req, dict):
            raise ValueError("stdin must hold one json object")
        sdk, api = req.get("sdk"), req.get("api")
        base_url = str(req.get("base_url", "")).rstrip("/")
        timeout = float(req.get("timeout") or 30)
        if sdk == "openai":
            import openai

            errors = (openai.APIError,)
            client = openai.OpenAI(
                base_url=base_url + "/v1", api_key="test", max_retries=0, timeout=timeout
            )
            call = {"chat": openai_chat, "responses": openai_responses}.get(api)
        elif sdk == "anthropic":
            import anthropic

            errors = (anthropic.APIError,)
            client = anthropic.Anthropic(
                base_url=base_url, api_key="test", max_retries=0, timeout=timeout
            )
            call = {"messages": anthropic_messages}.get(api)
        else:
            raise ValueError(f"unknown sdk {sdk!r} (expected openai or anthropic)")
        if call is None:
            raise ValueError(f"sdk {sdk!r} has no api {api!r}")
    except Exception as exc:
        out({"ok": False, "error_class": type(exc).__name__, "message": str(exc)})
        return 0
    try:
        result = call(client, req)
        out(result if "ok" in result else {"ok": True, **result})
    except errors as exc:
        # Connection errors and timeouts are APIErrors without a body: report them plainly.
        if getattr(exc, "response", None) is None and getattr(exc, "body", None) is None:
            out({"ok": False, "error_class": type(exc).__name__, "message": str(exc)})
        else:
            out(api_error(exc))
    except Exception as exc:
        out({"ok": False, "error_class": type(exc).__name__, "message": str(exc)})
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except OSError:
        sys.exit(2)
