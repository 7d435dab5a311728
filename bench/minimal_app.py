"""The baselines of the benchmarks: the least a Starlette endpoint can do.

One POST route that reads the whole body and answers a small JSON object (the
ingest benchmark's baseline), and one GET route at the path of the
entitlement API that answers a small JSON object (the reads benchmark's),
served by uvicorn with exactly the settings `billhook serve` uses (one
process, the default loop, billhook's bounded HTTP protocol and connection
limit, no access log, warnings only), so the ratio measures billhook's own work and nothing else.

Run it as `python -m bench.minimal_app --port PORT`.
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from billhook.api.app import uvicorn_options
from billhook.config import Settings


async def receive(request: Request) -> Response:
    """Read the body in full, then acknowledge it with a small JSON answer."""
    body = await request.body()
    return JSONResponse({"status": "accepted", "bytes": len(body)})


async def read(request: Request) -> Response:
    """Answer a small JSON object about the workspace in the path, looking nothing up."""
    return JSONResponse({"workspace_id": request.path_params["workspace_id"], "tier": "solo"})


app = Starlette(
    routes=[
        Route("/webhooks/stripe", receive, methods=["POST"]),
        Route("/v1/workspaces/{workspace_id}/entitlements", read, methods=["GET"]),
    ]
)


def main(argv: list[str] | None = None) -> None:
    """Serve :data:`app` on 127.0.0.1 with the uvicorn settings of `billhook serve`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_config=None,
        log_level="warning",
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=10,
        **uvicorn_options(Settings()),
    )


if __name__ == "__main__":
    main()
