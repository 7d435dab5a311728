"""The baselines of the ratios: the least a Starlette endpoint can do.

A POST route that reads the whole body and answers a small JSON object
(ingest's baseline) and a GET route at the entitlement API's path that
answers one without looking anything up (reads'), served by uvicorn with the
settings of `billhook serve` (one process, billhook's bounded HTTP protocol
and connection limit, no access log, warnings only): a ratio then measures
billhook's own work. `python -m bench.minimal_app --port PORT`.
"""

from __future__ import annotations

import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from billhook.api.deadlines import uvicorn_options
from billhook.config import Settings


async def receive(request: Request) -> Response:
    body = await request.body()
    return JSONResponse({"status": "accepted", "bytes": len(body)})


async def read(request: Request) -> Response:
    return JSONResponse({"workspace_id": request.path_params["workspace_id"], "tier": "solo"})


app = Starlette(
    routes=[
        Route("/webhooks/stripe", receive, methods=["POST"]),
        Route("/v1/workspaces/{workspace_id}/entitlements", read, methods=["GET"]),
    ]
)

if __name__ == "__main__":
    port = int(sys.argv[sys.argv.index("--port") + 1])
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        log_level="warning",
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=10,
        **uvicorn_options(Settings()),
    )
