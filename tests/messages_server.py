"""A small scripted Anthropic Messages-API server for end-to-end tests.

Point the real ``claude`` CLI at it with ``ANTHROPIC_BASE_URL=srv.url`` (see
``tests/real_cli.py``) and script what "the model" answers::

    from tests.messages_server import MessagesServer, tool_use, text, error

    with MessagesServer(script=[
        tool_use("Write", {"file_path": "/abs/out.txt", "content": "hi\\n"}),
        text("done"),
    ]) as srv:
        ...run the CLI with ANTHROPIC_BASE_URL=srv.url...
        assert srv.main_requests[1]["body"]["messages"][-1]  # holds the tool_result

Stdlib only; ``ThreadingHTTPServer`` bound to 127.0.0.1 on an ephemeral port.

Endpoints
---------
* ``POST /v1/messages`` (the CLI adds ``?beta=true``): non-streaming JSON, or
  server-sent events when the body has ``"stream": true`` with the real event
  sequence ``message_start``, ``content_block_start`` / ``content_block_delta``
  (``text_delta`` or ``input_json_delta``) / ``content_block_stop`` per block,
  ``message_delta`` (stop_reason + usage), ``message_stop``.
* ``POST /v1/messages/count_tokens``: ``{"input_tokens": N}`` (rough estimate).
* ``HEAD /`` (and any other HEAD): the CLI 2.1.197 sends ``HEAD /`` to the
  base URL at start-up as a connection warm-up; answered 200 with no body.
  Unknown GET paths get a real-shaped 404 ``not_found_error``.

Script steps
------------
The script is a list consumed one step per *main-conversation* request.
Each step is a dict (the helpers below build them) or a short string:

* ``text("done")`` / ``"text done"`` - an assistant message with one text block,
  ``stop_reason: end_turn``.
* ``tool_use("Write", {...})`` / ``'tool_use Write {"file_path": ..}'`` - an
  assistant message with one tool_use block (``stop_reason: tool_use``);
  ``tool_use(..., text="preface")`` adds a text block before it.
* ``message([block, ...], stop_reason=...)`` - any list of content blocks
  (``{"type": "text", ...}`` / ``{"type": "tool_use", "name", "input"}``).
* ``error(401)`` / ``"status 401"`` - an HTTP error with a real-shaped body
  ``{"type": "error", "error": {"type": ..., "message": ...}, "request_id": ...}``;
  defaults per status: 400 invalid_request_error, 401 authentication_error
  ("invalid x-api-key"), 403 permission_error, 404 not_found_error
  ("model: <model>"), 413 request_too_large, 429 rate_limit_error (with a
  ``retry-after`` header), 500 api_error, 529 overloaded_error.  Override with
  ``message=``, ``error_type=``, ``headers=``.  ``prompt_too_long()``,
  ``credit_balance_too_low()`` and ``model_not_found()`` build the 400/404
  bodies the CLI maps to its special messages; ``usage_limit(resets_at)`` the
  429 of a subscription usage limit (see its docstring).
* ``stream_error("overloaded_error", "Overloaded")`` - HTTP 200, then an SSE
  ``event: error`` mid-stream (non-streaming requests get the 529/500 instead).
* ``{"delay": seconds}`` may be added to any step (sleep before answering).
* a callable ``f(request_dict) -> step``.

When the script runs out, each further main request gets ``text(default_text)``
(so a CLI never hangs on an exhausted script); ``srv.exhausted`` tells.

Side requests
-------------
The CLI may send requests that are not the conversation.  Observed with 2.1.197:
with ``--permission-mode auto`` a risky Bash call makes the *auto-mode safety
classifier* ask (non-streaming, no ``tools`` key, ``max_tokens`` 64 with
``stop_sequences: ["</block>"]``, then 8192; the system prompt says "You are a
security monitor for autonomous AI coding agents" and wants ``<block>no</block>``
or ``<block>yes</block><reason>..</reason>``).  Known from the CLI's code but only
sent in other set-ups: ``model_validation`` (``max_tokens: 1``, "Hi", for
``/model``) and the ``quota_check`` (``max_tokens: 1``, "quota", claude.ai OAuth
logins only).  Every main-conversation request, including sub-agents and
``--tools ""`` (which sends ``"tools": []``), has a ``tools`` key and a big
``max_tokens``, so by default a request is a *side request* when it has no
``tools`` key or asks for ``max_tokens <= 1``.  Side requests never consume a
script step: the classifier gets ``<block>no</block>`` (``auto_mode_block=True``
makes it block), everything else ``text(side_text)``.  ``is_side=callable(body)``
changes the rule.  Plain runs with an API key (``-p``, acceptEdits/default, Write,
Bash, errors) sent no side request at all; the CLI also sends ``HEAD /`` at
start-up (2.1.197; 2.1.329 does not).

The CLI retries a *streaming* request that got a 404 once without streaming;
that fallback request is answered with the same error step (not a new one).

Recording
---------
``srv.requests`` lists every request as a dict: ``method``, ``path``,
``headers`` (lower-case keys), ``body`` (parsed JSON or None), ``raw`` (bytes),
``kind`` (``"main"``, ``"side"``, ``"count_tokens"``, ``"other"``), ``step``
(index of the script step used, or None) and ``status`` (HTTP status sent).
``srv.main_requests`` / ``srv.side_requests`` filter them.
"""

import http.server
import json
import threading
import time
import uuid

__all__ = [
    "MessagesServer",
    "text",
    "tool_use",
    "message",
    "error",
    "stream_error",
    "prompt_too_long",
    "credit_balance_too_low",
    "model_not_found",
    "usage_limit",
    "default_is_side",
    "is_auto_mode_classifier",
]

DEFAULT_MODEL = "claude-sonnet-4-5-20250929"

_ERROR_DEFAULTS = {
    400: ("invalid_request_error", "Invalid request"),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "Not found"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: (
        "rate_limit_error",
        "This request would exceed the rate limit for your organization of 50,000 input tokens "
        "per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits.",
    ),
    500: ("api_error", "Internal server error"),
    502: ("api_error", "Bad gateway"),
    503: ("api_error", "Service unavailable"),
    529: ("overloaded_error", "Overloaded"),
}


# ----------------------------------------------------------------- step helpers
def text(s, **kw):
    """A final assistant answer with one text block."""
    d = {"type": "text", "text": s}
    d.update(kw)
    return d


def tool_use(name, input, text=None, id=None, **kw):  # noqa: A002 - mirrors the API field
    """An assistant turn calling one tool (optionally with a text block first)."""
    d = {"type": "tool_use", "name": name, "input": input}
    if text is not None:
        d["text"] = text
    if id is not None:
        d["id"] = id
    d.update(kw)
    return d


def message(blocks, stop_reason=None, **kw):
    """An assistant turn with arbitrary content blocks."""
    d = {"type": "message", "blocks": list(blocks)}
    if stop_reason is not None:
        d["stop_reason"] = stop_reason
    d.update(kw)
    return d


def error(status, message=None, error_type=None, headers=None, retry_after=None, **kw):
    """An HTTP error answer with a real-shaped Anthropic error body."""
    d = {"type": "status", "status": int(status)}
    if message is not None:
        d["message"] = message
    if error_type is not None:
        d["error_type"] = error_type
    if headers:
        d["headers"] = dict(headers)
    if retry_after is not None:
        d["retry_after"] = retry_after
    d.update(kw)
    return d


def stream_error(error_type="overloaded_error", message="Overloaded", **kw):
    """HTTP 200 then an SSE ``error`` event after message_start."""
    d = {"type": "stream_error", "error_type": error_type, "message": message}
    d.update(kw)
    return d


def prompt_too_long(tokens=250000, maximum=200000):
    return error(400, "prompt is too long: %d tokens > %d maximum" % (tokens, maximum),
                 "invalid_request_error")


def credit_balance_too_low():
    return error(
        400,
        "Your credit balance is too low to access the Anthropic API. "
        "Please go to Plans & Billing to upgrade or purchase credits.",
        "invalid_request_error",
    )


def model_not_found(model=None):
    d = error(404, error_type="not_found_error")
    d["model_message"] = model  # None: use the request's model
    return d


def usage_limit(resets_at=None, limit_type="five_hour", message="Error"):
    """A 429 carrying the ``anthropic-ratelimit-unified-*`` headers of a subscription
    usage limit.  With claude.ai OAuth credentials (``real_claude_env(..., oauth=True)``)
    the CLI turns it into a ``rate_limit_event`` (status rejected, resetsAt) and the
    "You've hit your ... limit" result; with an API key it stays a plain 429."""
    if resets_at is None:
        resets_at = int(time.time()) + 3600
    abbrev = {"five_hour": "5h", "seven_day": "7d"}.get(limit_type, limit_type)
    return error(429, message, headers={
        "anthropic-ratelimit-unified-status": "rejected",
        "anthropic-ratelimit-unified-reset": str(int(resets_at)),
        "anthropic-ratelimit-unified-representative-claim": limit_type,
        "anthropic-ratelimit-unified-%s-utilization" % abbrev: "1.0",
        "anthropic-ratelimit-unified-%s-reset" % abbrev: str(int(resets_at)),
    })


def _parse_step_string(s):
    s = s.strip()
    head, _, rest = s.partition(" ")
    rest = rest.strip()
    if head == "text":
        if len(rest) >= 2 and rest[0] == rest[-1] and rest[0] in "'\"":
            rest = rest[1:-1]
        return text(rest)
    if head == "tool_use":
        name, _, js = rest.partition(" ")
        return tool_use(name, json.loads(js) if js.strip() else {})
    if head == "status":
        parts = rest.split(None, 1)
        d = error(int(parts[0]))
        if len(parts) > 1:
            d["message"] = parts[1]
        return d
    raise ValueError("cannot parse script step %r" % (s,))


def _normalise_step(step):
    if callable(step):
        return step
    if isinstance(step, str):
        return _parse_step_string(step)
    if isinstance(step, dict):
        return step
    raise TypeError("script step must be dict, str or callable, not %r" % (type(step),))


def default_is_side(body):
    """True for requests that are not the main conversation (see module doc).

    Every main-conversation request of the CLI has a ``tools`` key (an empty
    list with ``--tools ""``); the side requests seen (auto-mode classifier,
    model validation, quota check) have none, or ask for ``max_tokens: 1``.
    """
    if not isinstance(body, dict):
        return False
    if "tools" not in body:
        return True
    mt = body.get("max_tokens")
    return isinstance(mt, int) and mt <= 1


def _system_text(body):
    sysp = body.get("system")
    if isinstance(sysp, str):
        return sysp
    if isinstance(sysp, list):
        return "\n".join(b.get("text", "") for b in sysp if isinstance(b, dict))
    return ""


def is_auto_mode_classifier(body):
    """The ``--permission-mode auto`` safety classifier (answers ``<block>..``)."""
    t = _system_text(body)
    return "<block>no</block>" in t or "security monitor for autonomous" in t


# ----------------------------------------------------------------------- server
class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "klauss-messages-server/1"

    def log_message(self, *a):  # keep test output clean
        pass

    @property
    def owner(self):
        return self.server.owner

    def _read_body(self):
        n = int(self.headers.get("content-length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _record(self, raw, kind):
        body = None
        if raw:
            try:
                body = json.loads(raw.decode("utf-8"))
            except ValueError:
                body = None
        rec = {
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body,
            "raw": raw,
            "kind": kind,
            "step": None,
            "status": None,
            "time": time.time(),
        }
        return rec

    def _send_json(self, status, obj, headers=None):
        data = json.dumps(obj).encode("utf-8")
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("request-id", "req_" + uuid.uuid4().hex[:24])
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_HEAD(self):
        rec = self._record(b"", "other")
        rec["status"] = 200
        self.owner._add(rec)
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def do_GET(self):
        rec = self._record(b"", "other")
        rec["status"] = 404
        self.owner._add(rec)
        self._send_json(404, _error_body("not_found_error", "Not Found"))

    def do_POST(self):
        raw = self._read_body()
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/v1/messages/count_tokens":
            rec = self._record(raw, "count_tokens")
            rec["status"] = 200
            self.owner._add(rec)
            self._send_json(200, {"input_tokens": max(1, len(raw) // 4)})
            return
        if path != "/v1/messages":
            rec = self._record(raw, "other")
            rec["status"] = 404
            self.owner._add(rec)
            self._send_json(404, _error_body("not_found_error", "Not Found"))
            return
        rec = self._record(raw, "main")
        body = rec["body"] if isinstance(rec["body"], dict) else {}
        owner = self.owner
        if owner.is_side(body):
            rec["kind"] = "side"
            step = text(owner._side_answer(body))
        else:
            step, rec["step"] = owner._main_step(rec, bool(body.get("stream")))
        owner._add(rec)
        if step.get("delay"):
            time.sleep(float(step["delay"]))
        self._answer(step, body, rec)

    # -- answers
    def _answer(self, step, body, rec):
        """Send the answer; `rec["status"]` is set before anything is sent, so a client that has
        its answer finds its request's record complete."""
        kind = step.get("type")
        model = body.get("model") or DEFAULT_MODEL
        stream = bool(body.get("stream"))
        if kind == "status":
            status = step["status"]
            etype, emsg = _ERROR_DEFAULTS.get(status, ("api_error", "Error"))
            etype = step.get("error_type", etype)
            emsg = step.get("message", emsg)
            if "model_message" in step:
                emsg = "model: %s" % (step["model_message"] or model)
            headers = dict(step.get("headers") or {})
            if status == 429 or step.get("retry_after") is not None:
                headers.setdefault("retry-after", str(step.get("retry_after", 0)))
            if status == 529:
                headers.setdefault("x-should-retry", "true")
            rec["status"] = status
            self._send_json(status, _error_body(etype, emsg), headers)
            return
        if kind == "stream_error" and not stream:
            etype = step.get("error_type", "overloaded_error")
            status = 529 if etype == "overloaded_error" else 500
            rec["status"] = status
            self._send_json(status, _error_body(etype, step.get("message", "Overloaded")))
            return

        if kind == "stream_error":
            blocks, stop_reason = [], None
        else:
            blocks, stop_reason = _blocks_for(step)
        usage_in = int(step.get("input_tokens", self.owner.input_tokens))
        usage_out = int(step.get("output_tokens", self.owner.output_tokens))
        msg_id = "msg_" + uuid.uuid4().hex[:24]
        if not stream:
            msg = _message(msg_id, model, blocks, stop_reason, usage_in, usage_out)
            rec["status"] = 200
            self._send_json(200, msg)
            return
        rec["status"] = 200
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("request-id", "req_" + uuid.uuid4().hex[:24])
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True
        start = _message(msg_id, model, [], None, usage_in, 1)
        self._event("message_start", {"type": "message_start", "message": start})
        if kind == "stream_error":
            self._event("error", {"type": "error", "error": {
                "type": step.get("error_type", "overloaded_error"),
                "message": step.get("message", "Overloaded")}})
            self.wfile.flush()
            return
        for i, b in enumerate(blocks):
            if b["type"] == "text":
                self._event("content_block_start", {"type": "content_block_start", "index": i,
                                                    "content_block": {"type": "text", "text": ""}})
                t = b["text"]
                for chunk in _chunks(t, 40) or [""]:
                    self._event("content_block_delta", {"type": "content_block_delta", "index": i,
                                                        "delta": {"type": "text_delta", "text": chunk}})
            elif b["type"] == "tool_use":
                self._event("content_block_start", {"type": "content_block_start", "index": i,
                                                    "content_block": {"type": "tool_use", "id": b["id"],
                                                                      "name": b["name"], "input": {}}})
                js = json.dumps(b["input"])
                self._event("content_block_delta", {"type": "content_block_delta", "index": i,
                                                    "delta": {"type": "input_json_delta", "partial_json": ""}})
                for chunk in _chunks(js, 64):
                    self._event("content_block_delta", {"type": "content_block_delta", "index": i,
                                                        "delta": {"type": "input_json_delta",
                                                                  "partial_json": chunk}})
            else:  # any other block: send whole
                self._event("content_block_start", {"type": "content_block_start", "index": i,
                                                    "content_block": b})
            self._event("content_block_stop", {"type": "content_block_stop", "index": i})
        self._event("message_delta", {"type": "message_delta",
                                      "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                                      "usage": {"output_tokens": usage_out}})
        self._event("message_stop", {"type": "message_stop"})
        self.wfile.flush()

    def _event(self, name, data):
        self.wfile.write(("event: %s\ndata: %s\n\n" % (name, json.dumps(data))).encode("utf-8"))


def _chunks(s, n):
    return [s[i:i + n] for i in range(0, len(s), n)]


def _error_body(etype, msg):
    return {"type": "error", "error": {"type": etype, "message": msg},
            "request_id": "req_" + uuid.uuid4().hex[:24]}


def _tool_id():
    return "toolu_" + uuid.uuid4().hex[:24]


def _blocks_for(step):
    kind = step.get("type")
    if kind == "text":
        return [{"type": "text", "text": step["text"]}], step.get("stop_reason", "end_turn")
    if kind == "tool_use":
        blocks = []
        if step.get("text"):
            blocks.append({"type": "text", "text": step["text"]})
        blocks.append({"type": "tool_use", "id": step.get("id") or _tool_id(),
                       "name": step["name"], "input": step.get("input") or {}})
        return blocks, step.get("stop_reason", "tool_use")
    if kind == "message":
        blocks = []
        for b in step["blocks"]:
            b = dict(b)
            if b.get("type") == "tool_use":
                b.setdefault("id", _tool_id())
                b.setdefault("input", {})
            blocks.append(b)
        default_stop = "tool_use" if any(b.get("type") == "tool_use" for b in blocks) else "end_turn"
        return blocks, step.get("stop_reason", default_stop)
    raise ValueError("unknown script step type %r" % (kind,))


def _message(msg_id, model, blocks, stop_reason, usage_in, usage_out):
    return {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": usage_in,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": usage_out,
            "service_tier": "standard",
        },
    }


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class MessagesServer:
    """Scripted Messages-API server; see the module docstring."""

    def __init__(self, script=None, default_text="done", side_text="OK", is_side=None,
                 input_tokens=100, output_tokens=20, auto_mode_block=False,
                 host="127.0.0.1", port=0):
        self.auto_mode_block = auto_mode_block
        self.script = [_normalise_step(s) for s in (script or [])]
        self.default_text = default_text
        self.side_text = side_text
        self.is_side = is_side or default_is_side
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.requests = []
        self._lock = threading.Lock()
        self._pos = 0
        self._last_main = None
        self._host, self._port = host, port
        self._httpd = None
        self._thread = None

    # -- lifecycle
    def start(self):
        self._httpd = _Server((self._host, self._port), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def port(self):
        return self._httpd.server_address[1]

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def _side_answer(self, body):
        if is_auto_mode_classifier(body):
            if self.auto_mode_block:
                return "<block>yes</block><reason>[Test Block] blocked by the test server</reason>"
            return "<block>no</block>"
        return self.side_text

    # -- script
    def add(self, *steps):
        with self._lock:
            self.script.extend(_normalise_step(s) for s in steps)

    def _next_step(self):
        with self._lock:
            if self._pos < len(self.script):
                i = self._pos
                self._pos += 1
                return self.script[i], i
            self._pos += 1
            return text(self.default_text), None

    def _main_step(self, rec, stream):
        # The CLI retries a failed *streaming* request once without streaming
        # (seen for 404).  That fallback gets the same (error) step again and
        # does not consume a new one.
        with self._lock:
            last = self._last_main
        if (not stream and last is not None and last[0]
                and last[1].get("type") in ("status", "stream_error")):
            step, idx = last[1], last[2]
            rec["fallback"] = True
        else:
            step, idx = self._next_step()
            if callable(step):
                step = _normalise_step(step(rec))
        with self._lock:
            self._last_main = (stream, step, idx)
        return step, idx

    @property
    def steps_used(self):
        with self._lock:
            return min(self._pos, len(self.script))

    @property
    def exhausted(self):
        with self._lock:
            return self._pos > len(self.script)

    def _add(self, rec):
        with self._lock:
            self.requests.append(rec)

    # -- recorded requests
    def _of_kind(self, kind):
        with self._lock:
            return [r for r in self.requests if r["kind"] == kind]

    @property
    def main_requests(self):
        return self._of_kind("main")

    @property
    def side_requests(self):
        return self._of_kind("side")


if __name__ == "__main__":  # manual use: python3 tests/messages_server.py
    import sys
    with MessagesServer(script=[_parse_step_string(a) for a in sys.argv[1:]]) as _srv:
        print(_srv.url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
