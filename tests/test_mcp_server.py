"""mcp_server.py alone: the protocol serves any tools object, knowing nothing of Klauss."""

import io
import json

import mcp_server


class Echo:
    def call(self, name, args, ctx):
        if args.get("fail"):
            raise mcp_server.ToolError("fail: asked to")
        return f"{name}: {args.get('text', '')}"


class EchoServer(mcp_server.MCPServer):
    tool_list = [{"name": "echo", "description": "say it back", "inputSchema": {"type": "object"}}]
    server_info = {"name": "echo", "version": "1"}


def _session(*messages):
    out = io.BytesIO()
    server = EchoServer(Echo(), io.BytesIO(b"".join(json.dumps(m).encode() + b"\n" for m in messages)), out)
    server.serve()
    return {m["id"]: m for m in map(json.loads, out.getvalue().splitlines())}


def test_a_generic_server_answers_the_handshake_and_calls_its_tools():
    answers = _session(
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2024-11-05"}},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "nope"}},
    )
    assert answers[1]["result"]["serverInfo"] == {"name": "echo", "version": "1"}
    assert "instructions" not in answers[1]["result"]
    assert [t["name"] for t in answers[2]["result"]["tools"]] == ["echo"]
    assert answers[5]["error"]["code"] == mcp_server.INVALID_PARAMS and "'nope'" in answers[5]["error"]["message"]


def test_batches_and_tool_errors_have_the_mcp_shapes():
    out = io.BytesIO()
    batch = [{"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "hi"}}},
             {"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "echo", "arguments": {"fail": 1}}}]
    server = EchoServer(Echo(), io.BytesIO(json.dumps(batch).encode() + b"\n"), out)
    server.serve()
    (answer,) = map(json.loads, out.getvalue().splitlines())
    assert answer[0]["result"] == {"content": [{"type": "text", "text": "echo: hi"}], "isError": False}
    assert answer[1]["result"] == {"content": [{"type": "text", "text": "fail: asked to"}], "isError": True}
