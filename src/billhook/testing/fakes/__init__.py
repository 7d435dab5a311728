"""Local HTTP fakes of the Stripe and Polar APIs, for provider-sync tests.

Each fake is a Starlette app built from an in-memory state object the test
fills in (`stripe_api.StripeState`, `polar_api.PolarState`); serve it with
`billhook.testing.servers.serve_in_thread` and point the provider's real SDK
at the URL. Both fakes share what lives here: the request log
(`RecordedRequest`) and the failure knob (`Failure`, queued on the state's
`fail_next`). A fresh state accepts the credentials of
`billhook.testing.settings` (`STRIPE_API_KEY`, `POLAR_ACCESS_TOKEN`).

    with serve_in_thread(stripe_fake(state)) as url:
        client = stripe.StripeClient(STRIPE_API_KEY, base_addresses={"api": url})
    with serve_in_thread(polar_fake(state)) as url, Polar(POLAR_ACCESS_TOKEN, base_url=url) as p:
        ...

See each module's docstring for the endpoints and the exact shapes.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

__all__ = [
    "Failure",
    "FakeLog",
    "RecordedRequest",
    "decode_nested",
]


@dataclass(frozen=True)
class Failure:
    """One injected failure: the next request is answered with it instead of being served.

    `status` is the HTTP status; `headers` are added to the response (e.g.
    `{"Retry-After": "2"}` or Stripe's `{"Stripe-Should-Retry": "true"}`);
    `body` replaces the provider's default error body for `status` when not
    None; the fake waits `delay_s` seconds before answering (to exercise
    client timeouts). A bare `int` in `fail_next` means `Failure(status)`.
    """

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Any = None
    delay_s: float = 0.0


@dataclass
class RecordedRequest:
    """One request a fake received, as a test would assert on it.

    `query` keeps the last value of each query parameter, `query_lists` all of
    them in order (Polar repeats keys for lists: `status=a&status=b`; Stripe
    indexes them: `types[0]=a&types[1]=b`). `headers` has lower-cased names
    and never `authorization`. `form` is the flat form body of a Stripe POST
    (`{"line_items[0][price]": "price_1", ...}`), `json` the decoded JSON
    body of a Polar POST (None otherwise). `status` is what the fake answered.
    """

    method: str
    path: str
    query: dict[str, str]
    query_lists: dict[str, list[str]]
    headers: dict[str, str]
    form: dict[str, str]
    json: Any
    status: int = 0


@dataclass
class FakeLog:
    """The request log and failure queue both fakes' states inherit.

    `fail_next`: statuses (or `Failure`s) to answer the next requests with,
    first one first, each consumed by one request whatever its path.
    `requests`: every request received, oldest first (`RecordedRequest`).
    The fake runs on uvicorn's thread while the test mutates the state on its
    own, so the app touches both lists only under the state's lock.
    """

    fail_next: list[int | Failure] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def requests_to(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        """The recorded requests whose path is `path` (and method `method`, if given)."""
        with self._lock:
            return [
                r
                for r in self.requests
                if r.path == path and (method is None or r.method == method.upper())
            ]

    def clear_requests(self) -> None:
        """Forget every recorded request."""
        with self._lock:
            self.requests.clear()

    def _record(self, entry: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(entry)

    def _pop_failure(self) -> Failure | None:
        with self._lock:
            if not self.fail_next:
                return None
            nxt = self.fail_next.pop(0)
        return nxt if isinstance(nxt, Failure) else Failure(nxt)


_KEY_RE = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")


def decode_nested(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Decode Rack-style bracketed keys the way Stripe does.

    `a[b]=1` → `{"a": {"b": "1"}}`; `a[0]=x&a[1]=y` and `a[]=x&a[]=y` →
    `{"a": ["x", "y"]}`; `a[0][b]=1` → `{"a": [{"b": "1"}]}`. Values stay strings.
    """
    root: dict[str, Any] = {}
    for key, value in pairs:
        match = _KEY_RE.match(key)
        if match is None:
            root[key] = value
            continue
        parts = [match.group(1), *re.findall(r"\[([^\[\]]*)\]", match.group(2))]
        node: dict[str, Any] = root
        for n, part in enumerate(parts):
            last = n == len(parts) - 1
            if part == "":  # `a[]`: append as the next index
                part = str(len(node))
            if last:
                node[part] = value
            else:
                child = node.get(part)
                if not isinstance(child, dict):
                    child = {}
                    node[part] = child
                node = child
    return _listify(root)  # type: ignore[no-any-return]


def _listify(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    items = {k: _listify(v) for k, v in value.items()}
    if items and all(k.isdigit() for k in items):
        return [items[k] for k in sorted(items, key=int)]
    return items


Handler = Callable[[Request], Awaitable[Response]]


async def serve_recorded(
    log: FakeLog,
    request: Request,
    *,
    failure_response: Callable[[Failure], Response],
    handle: Handler,
) -> Response:
    """Record `request`, answer the next queued failure if any, else `handle` it."""
    body = await request.body()
    content_type = request.headers.get("content-type", "")
    form: dict[str, str] = {}
    json_body: Any = None
    if body and content_type.startswith("application/x-www-form-urlencoded"):
        form = dict(parse_qsl(body.decode(), keep_blank_values=True))
    elif body and content_type.startswith("application/json"):
        try:
            json_body = await request.json()
        except ValueError:
            json_body = None
    query_lists: dict[str, list[str]] = {}
    for k, v in request.query_params.multi_items():
        query_lists.setdefault(k, []).append(v)
    entry = RecordedRequest(
        method=request.method,
        path=request.url.path,
        query={k: v[-1] for k, v in query_lists.items()},
        query_lists=query_lists,
        headers={k.lower(): v for k, v in request.headers.items() if k.lower() != "authorization"},
        form=form,
        json=json_body,
    )
    log._record(entry)
    failure = log._pop_failure()
    if failure is not None:
        if failure.delay_s:
            await asyncio.sleep(failure.delay_s)
        response = failure_response(failure)
        for name, value in failure.headers.items():
            response.headers[name] = value
    else:
        response = await handle(request)
    entry.status = response.status_code
    return response
