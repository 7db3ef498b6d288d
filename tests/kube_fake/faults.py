"""The API's own faults, set by a test: answer slowly, or answer 500/429 for the next N requests
(the admin routes under /fake/ are never affected)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable

from aiohttp import web

from tests.kube_fake.meta import ApiError

ADMIN_PREFIX = "/fake/"
_REASONS = {
    403: "Forbidden",  # what RBAC answers a user not allowed the call
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
}


@dataclasses.dataclass
class Faults:
    delay: float = 0.0  # seconds added before every API answer
    fail_count: int = 0  # how many of the next requests fail ...
    fail_code: int = 500  # ... with this status
    failed: int = 0  # how many requests the fault has failed so far

    def set(
        self,
        delay: float | None = None,
        fail_count: int | None = None,
        fail_code: int | None = None,
    ) -> None:
        if delay is not None:
            self.delay = min(max(float(delay), 0.0), 60.0)
        if fail_count is not None:
            self.fail_count = max(int(fail_count), 0)
        if fail_code is not None:
            if fail_code not in _REASONS:
                raise ValueError(f"fail_code must be one of {sorted(_REASONS)}")
            self.fail_code = fail_code

    def middleware(self) -> Callable[..., Awaitable[web.StreamResponse]]:
        @web.middleware
        async def faulty(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            if request.path.startswith(ADMIN_PREFIX):
                return await handler(request)
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.fail_count > 0:
                self.fail_count -= 1
                self.failed += 1
                code = self.fail_code
                error = ApiError(code, _REASONS[code], "injected by the kube fake's fault knob")
                headers = {"Retry-After": "1"} if code == 429 else {}
                return web.json_response(error.status(), status=code, headers=headers)
            return await handler(request)

        return faulty
