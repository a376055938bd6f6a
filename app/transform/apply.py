"""A route's compiled transform applied to a request on its way in and to the answer on its way out.

Bad client input is a 400 naming the field and the rule; a backend answer that cannot be transformed
is the backend's fault, a 502 saying the same.
"""

from __future__ import annotations

import asyncio

import aiohttp

from app.edge.bodies import BodyTooLarge, read_body, read_response_limited
from app.pipeline.exchange import Exchange, Reply, error_reply
from app.routing.router import Route
from app.transform.compiled import CompiledTransform
from app.transform.errors import TransformationError


async def transform_request(ex: Exchange, route: Route, transform: CompiledTransform) -> Reply | None:
    """Rewrite headers, query and (for routes with body rules) the body; a Reply refuses the request."""
    version = transform.client_version(ex.headers, ex.path)
    ex.client_version = version
    ex.replace_headers(transform.request_headers(ex.headers))
    ex.query_string = transform.query(ex.query_string)
    if not transform.has_request_body_rules:
        return None
    limit: int = route.compiled.max_body
    try:
        body = ex.body if ex.body is not None else await read_body(ex, limit)
        ex.body = transform.request_body(body, version)
    except BodyTooLarge:
        return error_reply(413, "request body too large", limit=limit)
    except TransformationError as error:
        details = error.to_dict()
        return error_reply(400, details.pop("error"), **details)
    return None


async def transform_reply(ex: Exchange, route: Route, transform: CompiledTransform, reply: Reply) -> Reply:
    """Rewrite the backend's answer for the client's version."""
    reply.headers = transform.response_headers(reply.headers)
    if not transform.has_response_body_rules or reply.status == 304:
        # A 304 has no body: the kept entry it confirms holds the body, transformed when it was stored.
        return reply
    limit: int = route.compiled.max_body
    if reply.stream is not None:
        try:
            body = await read_response_limited(reply.stream, limit)
        except BodyTooLarge:
            return error_reply(502, "backend answer too large to transform", limit=limit)
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return error_reply(502, "backend broke off its answer", route=route.key)
        finally:
            reply.stream.release()
        reply.stream = None
        reply.body = body
    try:
        reply.body = transform.response_body(reply.body, ex.client_version)
    except TransformationError as error:
        details = error.to_dict()
        return error_reply(502, "backend answer could not be transformed: " + details.pop("error"), **details)
    reply.headers.append((b"content-length", str(len(reply.body)).encode()))
    return reply
