"""An official MCP client (the Python SDK) through one 2026-07-28
elicitation round trip: `tools/call` answered with an input request, the
user's answer (always "Ada"), the call made again with it.

Usage: python elicit.py URL. Prints one JSON object per line: the protocol
it negotiated, the question it was asked, the tool's final text.
"""

import asyncio
import json
import sys

import mcp_types as types
from mcp import Client


async def elicit(context, params):
    print(json.dumps({"asked": params.message}), flush=True)
    return types.ElicitResult(action="accept", content={"name": "Ada"})


async def main(url):
    async with Client(url, elicitation_callback=elicit) as client:
        print(json.dumps({"protocol": client.protocol_version}), flush=True)
        result = await client.call_tool("test_input_required_result_elicitation", {})
        print(json.dumps({"text": result.content[0].text}), flush=True)


asyncio.run(main(sys.argv[1]))
