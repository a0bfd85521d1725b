"""mcp_server.py: the Model Context Protocol over stdio, with no knowledge of what the tools do.

Owns JSON-RPC 2.0 framing (newline-delimited, one message per line, UTF-8), the MCP handshake
(`initialize`, `ping`, `tools/list`, `tools/call`), batches, cancellation, progress notifications
and the error shapes. A server is given a tools object with `call(name, args, ctx)`; subclasses
name the tool list, the server info and instructions, and which exceptions are the caller's
fault (`error_text`). Klauss's tools and its entry point are in klauss_mcp.py.

Requests `initialize`, `ping`, `tools/list` and `tools/call` are answered; any other request
gets -32601. Notifications (no "id") never get a response; `notifications/cancelled` sets the
cancel event of a running call. A line that is not JSON gets -32700, a message that is not a
JSON-RPC request -32600, bad `tools/call` params (unknown tool, arguments not an object) -32602;
the server never exits on bad input, only on end of input. Batches are answered with an array of
the responses, in order, computed one after the other; an empty array is -32600.
"""

import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path

# Newest first; an `initialize` asking for another version is answered with the first one.
PROTOCOL_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
DRAIN_SECONDS = 10  # on end of input, how long running tool calls may finish

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL_ERROR = -32700, -32600, -32601, -32602, -32603


class ToolError(Exception):
    """A tool failure the caller can act on; the message is the tool result (isError: true)."""


def log(message, name="mcp"):
    try:
        print(f"{name}: {message}", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


class CallContext:
    """What a running tool call can ask: whether it should stop early; and a way to report progress
    (sent as notifications/progress when the client gave a progressToken)."""

    def __init__(self, stop_event=None, cancel_event=None, send_progress=None):
        self._events = [e for e in (stop_event, cancel_event) if e is not None]
        self._send_progress = send_progress
        self._last = None

    def cancelled(self):
        return any(e.is_set() for e in self._events)

    def progress(self, done, total, message):
        # MCP: the progress value must increase with each notification.
        if self._send_progress is None or (self._last is not None and done <= self._last):
            return
        self._last = done
        self._send_progress(done, total, message)


def _error(msg_id, code, message):
    return {"jsonrpc": "2.0", "id": msg_id, "error": {"code": code, "message": message}}


def _result(msg_id, result):
    return {"jsonrpc": "2.0", "id": msg_id, "result": result}


def _valid_id(value):
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def _id_key(value):
    return json.dumps(value)


def _where(exc):
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return f"{Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno}" if tb else "?"


class MCPServer:
    """One MCP session over a pair of binary streams: read a line, dispatch, write one line.
    Subclasses set the class attributes below; `tools.call(name, args, ctx)` returns the text."""

    tool_list = []  # the tools/list answer: dicts with name, description, inputSchema
    server_info = {"name": "mcp", "version": "0"}
    instructions = None
    log_name = "mcp"

    def __init__(self, tools, instream, outstream, trace=None):
        self.tools = tools
        self.tool_names = {t["name"] for t in self.tool_list}
        self.instream = instream
        self.outstream = outstream
        self.trace = trace
        self.initialized = False
        self.client = None
        self.protocol_version = None
        self.closing = threading.Event()
        self._write_lock = threading.Lock()
        self._calls = {}  # id key -> (thread, cancel event)
        self._calls_lock = threading.Lock()

    def _log(self, message):
        log(message, self.log_name)

    # --- I/O ---

    def _trace(self, direction, payload):
        if not self.trace:
            return
        try:
            with open(self.trace, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"t": round(time.time(), 3), "dir": direction, "msg": payload}) + "\n")
        except (OSError, TypeError, ValueError):
            pass

    def send(self, message):
        data = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"
        with self._write_lock:
            self._trace("out", message)
            try:
                self.outstream.write(data)
                self.outstream.flush()
            except (OSError, ValueError):  # the client went away
                self.closing.set()

    def serve(self):
        """Answer messages until end of input; then let running tool calls finish (briefly)."""
        while not self.closing.is_set():
            try:
                line = self.instream.readline()
            except (OSError, ValueError):
                break
            if not line:
                break
            if not line.strip():
                continue
            try:
                response = self.handle_line(line)
            except Exception as exc:  # never die on input; say what happened
                self._log(f"internal error handling a message: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
                response = _error(None, INTERNAL_ERROR, f"internal error: {type(exc).__name__}: {exc}")
            if response is not None:
                self.send(response)
        self.closing.set()
        deadline = time.monotonic() + DRAIN_SECONDS
        with self._calls_lock:
            threads = [t for t, _ in self._calls.values()]
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def handle_line(self, line):
        """The response to one line (a dict, a list for a batch, or None)."""
        try:
            text = line.decode("utf-8") if isinstance(line, bytes) else line
            message = json.loads(text, parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError) as exc:
            self._trace("in", {"unparsable": repr(line[:200])})
            return _error(None, PARSE_ERROR, f"Parse error: {exc}")
        self._trace("in", message)
        if isinstance(message, list):
            if not message:
                return _error(None, INVALID_REQUEST, "Invalid Request: empty batch")
            responses = [r for r in (self.handle_message(m, batch=True) for m in message) if r is not None]
            return responses or None
        return self.handle_message(message)

    # --- dispatch ---

    def handle_message(self, message, batch=False):
        if not isinstance(message, dict):
            return _error(None, INVALID_REQUEST, "Invalid Request: expected a JSON-RPC object")
        if "method" not in message:
            if "id" in message and ("result" in message or "error" in message):
                return None  # a response; this server sends no requests, so nothing waits for it
            return _error(message.get("id") if _valid_id(message.get("id")) else None, INVALID_REQUEST,
                          "Invalid Request: no method")
        is_request = "id" in message
        msg_id = message.get("id")
        if is_request and not _valid_id(msg_id):
            return _error(None, INVALID_REQUEST, "Invalid Request: id must be a string or a number")
        method = message["method"]
        if message.get("jsonrpc") != "2.0":
            return _error(msg_id, INVALID_REQUEST, 'Invalid Request: "jsonrpc" must be "2.0"')
        if not isinstance(method, str):
            return _error(msg_id, INVALID_REQUEST, "Invalid Request: method must be a string")
        params = message.get("params")
        if params is None:
            params = {}
        if not isinstance(params, dict):
            if not is_request:
                return None
            return _error(msg_id, INVALID_PARAMS, "Invalid params: params must be an object")
        if not is_request:
            self.handle_notification(method, params)
            return None
        if method == "initialize":
            return _result(msg_id, self.initialize(params))
        if method == "ping":
            return _result(msg_id, {})
        if method == "tools/list":
            return _result(msg_id, {"tools": self.tool_list})
        if method == "tools/call":
            return self.tools_call(msg_id, params, batch)
        return _error(msg_id, METHOD_NOT_FOUND, f"Method not found: {method}")

    def handle_notification(self, method, params):
        if method == "notifications/initialized":
            self.initialized = True
        elif method == "notifications/cancelled":
            key = _id_key(params.get("requestId"))
            with self._calls_lock:
                call = self._calls.get(key)
            if call is not None:
                self._log(f"request {params.get('requestId')} cancelled by the client: {params.get('reason') or ''}")
                call[1].set()

    def initialize(self, params):
        requested = params.get("protocolVersion")
        self.protocol_version = requested if requested in PROTOCOL_VERSIONS else PROTOCOL_VERSIONS[0]
        info = params.get("clientInfo")
        self.client = info if isinstance(info, dict) else None
        self._log(f"initialize from {(self.client or {}).get('name', 'a client')} "
             f"{(self.client or {}).get('version', '')}, protocol {requested!r} -> {self.protocol_version}")
        answer = {"protocolVersion": self.protocol_version,
                  "capabilities": {"tools": {}},
                  "serverInfo": self.server_info}
        if self.instructions:
            answer["instructions"] = self.instructions
        return answer

    def tools_call(self, msg_id, params, batch=False):
        name = params.get("name")
        if not isinstance(name, str) or name not in self.tool_names:
            return _error(msg_id, INVALID_PARAMS, f"Unknown tool: {name!r} (known: {', '.join(sorted(self.tool_names))})")
        args = params.get("arguments")
        if args is None:
            args = {}
        if not isinstance(args, dict):
            return _error(msg_id, INVALID_PARAMS, "Invalid params: arguments must be an object")
        cancel = threading.Event()
        meta = params.get("_meta")
        token = meta.get("progressToken") if isinstance(meta, dict) else None
        send_progress = None
        if _valid_id(token):
            def send_progress(done, total, message):
                self.send({"jsonrpc": "2.0", "method": "notifications/progress",
                           "params": {"progressToken": token, "progress": done, "total": total, "message": message}})
        ctx = CallContext(self.closing, cancel, send_progress)
        if batch:
            return _result(msg_id, self.run_tool(name, args, ctx))
        key = _id_key(msg_id)

        def run():
            try:
                result = self.run_tool(name, args, ctx)
            finally:
                with self._calls_lock:
                    self._calls.pop(key, None)
            if cancel.is_set():
                return  # the client cancelled it: no response
            self.send(_result(msg_id, result))

        thread = threading.Thread(target=run, name=f"tool-{name}", daemon=True)
        with self._calls_lock:
            self._calls[key] = (thread, cancel)
        thread.start()
        return None

    def run_tool(self, name, args, ctx):
        """The tools/call result for one call; never raises."""
        started = time.monotonic()
        try:
            text, is_error = self.tools.call(name, args, ctx), False
        except Exception as exc:
            text, is_error = self.error_text(exc), True
            if text is None:  # a bug: still one line for the model, the traceback for the log
                text = f"internal error: {type(exc).__name__}: {exc} (at {_where(exc)}); please report it"
                self._log(traceback.format_exc().rstrip())
        self._log(f"{name} -> {'error: ' + text.splitlines()[0] if is_error else 'ok'} ({time.monotonic() - started:.2f}s)")
        return {"content": [{"type": "text", "text": text}], "isError": is_error}

    def error_text(self, exc):
        """The one-line isError text for an exception that is the caller's to act on (bad input,
        a missing file), or None for a bug. Subclasses add their own error types."""
        if isinstance(exc, (ToolError, ValueError)):
            return str(exc) or type(exc).__name__
        if isinstance(exc, OSError):
            return f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
        return None


def protocol_streams():
    """(in, out) binary streams for the protocol; fds 0 and 1 then point at /dev/null and stderr,
    so a stray print or a child process cannot read our input or write into our output."""
    proto_in = os.fdopen(os.dup(0), "rb")
    proto_out = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return proto_in, proto_out
