"""ORIGINALITY_MCP=1: the launched app serves the analysis as an MCP tool through Gradio's /gradio_api/mcp
endpoint, described by `analyze_api`'s docstring and typed arguments. Skipped without the `mcp` package."""

from __future__ import annotations

import asyncio

import pytest
from conftest import serve_app

mcp = pytest.importorskip("mcp")
pytestmark = pytest.mark.slow


async def _list_tools(url: str) -> list:
    from mcp.client.streamable_http import streamable_http_client

    async with streamable_http_client(url) as (read, write, _):
        async with mcp.ClientSession(read, write) as session:
            await session.initialize()
            return (await session.list_tools()).tools


def test_the_analysis_is_an_mcp_tool(tiny_shapes_model, tmp_path):
    with serve_app(tmp_path, {"ORIGINALITY_MCP": "1", "ORIGINALITY_MODEL": str(tiny_shapes_model)}) as url:
        tools = {t.name: t for t in asyncio.run(_list_tools(url + "gradio_api/mcp/"))}
    assert "analyze_api" in tools, sorted(tools)
    tool = tools["analyze_api"]
    assert "how original an image is" in tool.description
    assert {"image", "world", "domain", "preset", "settings"} <= set(tool.inputSchema["properties"])
    assert "load_run_api" in tools
