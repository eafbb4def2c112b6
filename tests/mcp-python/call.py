"""An official MCP client (the Python SDK): connects, lists the tools and
calls one.

Usage: python call.py URL TOOL [ARGUMENTS-AS-JSON]. Prints one JSON object
per line: the protocol it negotiated, the tools' names, the tool's text.
"""

import asyncio
import json
import sys

from mcp import Client


async def main(url, tool, arguments):
    async with Client(url) as client:
        print(json.dumps({"protocol": client.protocol_version}), flush=True)
        listed = await client.list_tools()
        print(json.dumps({"tools": [t.name for t in listed.tools]}), flush=True)
        result = await client.call_tool(tool, arguments)
        print(json.dumps({"text": result.content[0].text, "isError": bool(result.is_error)}), flush=True)


asyncio.run(main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}))
