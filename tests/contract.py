"""Checking answers against the app's own `/openapi.json` (JSON Schema 2020-12).

`contract_client(base_url)` is an `httpx.Client` whose every answer is checked
before the test sees it: the route and method must be described, the status
must be one the route documents (an undocumented status fails), the content
type must be one it lists, and a JSON body must match the schema. A failure is
an `AssertionError` raised from the request call, naming the route and why.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

import httpx
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

# The URI the document is registered under, so `$ref`s resolve inside it.
DOCUMENT_URI = "urn:billhook:openapi"
# Path parameters match one path segment without line breaks, as the app routes them; an
# empty one too, so that the answer to `/v1/workspaces//entitlements` (400) is checked
# against that route's, and a route that refuses it must document its answer.
_PARAM = re.compile(r"\{[^/{}]+\}")


def _regex(template: str) -> re.Pattern[str]:
    return re.compile("^" + "[^/\n]*".join(map(re.escape, _PARAM.split(template))) + "$")


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


class Contract:
    """The routes, statuses and schemas of one OpenAPI document."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document = document
        resource = Resource.from_contents(dict(document), default_specification=DRAFT202012)
        self._registry: Registry[Any] = Registry().with_resource(DOCUMENT_URI, resource)
        self._routes = [(_regex(path), path) for path in document["paths"]]
        self._validators: dict[str, Draft202012Validator] = {}

    @classmethod
    def of_server(cls, base_url: str) -> Contract:
        """The document a running server serves."""
        response = httpx.get(f"{base_url}/openapi.json", timeout=10)
        assert response.status_code == 200, response.text
        return cls(response.json())

    def template(self, path: str) -> str | None:
        """The described path template `path` falls under, if any."""
        for pattern, template in self._routes:
            if pattern.match(path):
                return template
        return None

    def operation(self, method: str, path: str) -> tuple[str, Mapping[str, Any] | None]:
        """The described template and operation; the operation is None when not described."""
        template = self.template(path)
        if template is None:
            return path, None
        return template, self.document["paths"][template].get(method.lower())

    def check(self, response: httpx.Response) -> None:
        """Assert `response` is an answer its route documents, body and all."""
        request = response.request
        self.check_answer(
            request.method,
            request.url.path,
            response.status_code,
            response.headers.get("content-type", ""),
            response.content,
        )

    def check_answer(
        self, method: str, path: str, status_code: int, content_type: str, body: bytes
    ) -> None:
        """Assert an answer to `method path` (percent-decoded) is one the document describes.

        What is not described must not exist: a path or method the document
        lacks is answered 404 `not_found` or 405 `method_not_allowed`.
        """
        template, operation = self.operation(method, path)
        status = str(status_code)
        where = f"{method} {template} → {status}"
        if operation is None:
            expected = {"404": "not_found", "405": "method_not_allowed"}
            assert status in expected, f"{where}: not described, yet answered"
            self._valid(json.loads(body), "components/schemas/Error", where)
            assert json.loads(body)["error"] == expected[status], f"{where}: {body[:300]!r}"
            return
        answers = operation["responses"]
        assert status in answers, f"{where}: undocumented status ({body[:300]!r})"
        content = answers[status].get("content", {})
        media = content_type.split(";")[0].strip()
        assert media in content, f"{where}: content type {media!r} not in {sorted(content)}"
        if media == "application/json":
            pointer = _pointer("paths", template, method.lower(), "responses", status, "content")
            self._valid(json.loads(body), f"{pointer}/application~1json/schema", where)

    def _valid(self, instance: object, key: str, where: str) -> None:
        error = best_match(self._validator(key).iter_errors(instance))
        assert error is None, f"{where}: {error.message} at {list(error.absolute_path)}"

    def _validator(self, key: str) -> Draft202012Validator:
        if key not in self._validators:
            schema = {"$ref": f"{DOCUMENT_URI}#/{key}"}
            self._validators[key] = Draft202012Validator(
                schema,
                registry=self._registry,
                format_checker=Draft202012Validator.FORMAT_CHECKER,
            )
        return self._validators[key]


def contract_hook(contract: Contract) -> Callable[[httpx.Response], None]:
    """An httpx response hook checking every answer against `contract`."""

    def check(response: httpx.Response) -> None:
        response.read()
        contract.check(response)

    return check


def contract_client(base_url: str, **kwargs: Any) -> httpx.Client:
    """An `httpx.Client` for `base_url` that checks every answer against its `/openapi.json`."""
    contract = Contract.of_server(base_url)
    hooks = {"response": [contract_hook(contract)]}
    return httpx.Client(base_url=base_url, event_hooks=hooks, **kwargs)
