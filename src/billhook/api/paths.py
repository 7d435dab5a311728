"""The `{workspace_id}` segment of the `/v1/workspaces/...` routes.

Starlette's default path parameter needs one character at least, so
`/v1/workspaces//entitlements` would match no route and answer 404 as an
unknown path would. These routes take the segment empty too, and an empty or
blank workspace id is then a 400 `invalid_request`, like any other bad input
(docs/api.md).
"""

from __future__ import annotations

from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request

from billhook.api.bodies import invalid

# The convertor's name, as route paths use it: `{workspace_id:segment}`.
SEGMENT = "segment"
# Where every route about one workspace starts, relative to `/v1`.
WORKSPACE_PATH = "/workspaces/{workspace_id:" + SEGMENT + "}"


class SegmentConvertor(Convertor[str]):
    """One path segment, which may be empty (Starlette's `str` must not be)."""

    regex = "[^/]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        if "/" in value:
            raise ValueError("a path segment holds no /")
        return value


register_url_convertor(SEGMENT, SegmentConvertor())


def workspace_id(request: Request) -> str:
    """The workspace the request is about; 400 `invalid_request` when its id is empty or
    only whitespace (`/v1/workspaces/%20/entitlements`)."""
    workspace: str = request.path_params["workspace_id"]
    if not workspace.strip():
        raise invalid("workspace_id must not be empty or blank")
    return workspace
