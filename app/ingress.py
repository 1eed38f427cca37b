"""The ingress deployment: HTTP for sessions, a WebSocket per connection.

No `from __future__ import annotations` here: FastAPI reads the route
signatures at run time, and Serve's ingress wrapper hides their module.
"""

import asyncio
import json
import logging
import re
import time
from pathlib import Path as FilePath
from typing import Any

from fastapi import FastAPI, Header, HTTPException, Path, Request, WebSocket
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from ray import serve
from ray.serve.handle import DeploymentHandle

from app.access import ApiKeys, bearer, origin_allowed
from app.connection import IngressContext, SessionConnection
from app.errors import (
    SessionEnded,
    SessionNotFound,
    StoreUnavailable,
    TooManySessions,
    Unauthorized,
)
from app.fanout import Fanout
from app.metrics import IngressMetrics
from app.protocol import CloseCode, ListenerCreated, SessionCreated, SessionRequest
from app.registry import ProcessorRegistry
from app.segmenter import Segmenter
from app.settings import IngressSettings
from app.stages import Capabilities, ServeStages
from app.store import AudioPace, SessionConfig, SessionStore
from app.tasks import cancel_and_wait
from app.usage import UsageLedger
from app.vad import SpeechDetector
from deployments.logs import use_serve_logs

logger = logging.getLogger("tolk.ingress")

api = FastAPI(title="Tolk", summary="Live speech-to-speech translation")

# The browser client: a page at `/` and its scripts, served as plain files.
_WEB = FilePath(__file__).parent / "web"
api.mount("/web", StaticFiles(directory=_WEB), name="web")
_PAGE_HEADERS = {
    # Scripts, styles and sockets of this origin only; no framing by others.
    "Content-Security-Policy": ("default-src 'self'; frame-ancestors 'none'"),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}

_CAPABILITIES_TTL_S = 30.0


# Above the deployment: Serve pickles the class when it is decorated, with
# only the module globals that exist by then.
def _enum_name(value: object) -> str:
    return str(getattr(value, "value", value))


# What the store makes: anything else names no session, and is not logged.
_SESSION_ID = re.compile(r"[0-9a-f]{24}")
SessionId = Path(pattern=_SESSION_ID.pattern)

# A session request is a few hundred bytes; nothing bigger is read.
_MAX_BODY_BYTES = 16 * 1024
# The body is read by hand, after the API key is checked, so that a caller
# without a key learns nothing, not even what a valid body looks like.
_SESSION_REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": SessionRequest.model_json_schema()}},
    }
}


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"the body is over {limit} bytes")
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            raise HTTPException(413, f"the body is over {limit} bytes")
    return bytes(body)


@serve.deployment(
    num_replicas=2,
    # An open WebSocket counts as an ongoing request for its whole life.
    max_ongoing_requests=500,
    ray_actor_options={"num_cpus": 0.1},
    graceful_shutdown_timeout_s=10,
)
@serve.ingress(api)
class Ingress:
    """Holds sessions' sockets; all their state lives in Redis."""

    def __init__(
        self,
        transcriber: DeploymentHandle,
        translator: DeploymentHandle,
        synthesizer: DeploymentHandle,
        settings: dict[str, Any] | None = None,
    ) -> None:
        use_serve_logs()
        self._settings = IngressSettings(**(settings or {}))
        self._api_keys = ApiKeys(self._settings.api_keys)
        if not self._api_keys:
            logger.warning("no API keys configured: nobody can create sessions")
        self._store = SessionStore(
            self._settings.redis_url,
            ttl_s=self._settings.session_ttl_s,
            max_events=self._settings.event_log_max_events,
            max_log_bytes=self._settings.event_log_max_bytes,
            max_connections=self._settings.redis_max_connections,
            pace=AudioPace(
                self._settings.max_audio_speed, self._settings.audio_burst_s
            ),
            max_pending_jobs=self._settings.max_pending_utterances,
        )
        self._ledger = UsageLedger(self._store)
        metrics = IngressMetrics()
        self._stages = ServeStages(
            transcriber, translator, synthesizer, self._ledger, metrics
        )
        segmenter = Segmenter(self._settings.segmenter(), SpeechDetector())
        self._context = IngressContext(
            settings=self._settings,
            store=self._store,
            fanout=Fanout(self._store.client),
            registry=ProcessorRegistry(
                self._store,
                self._stages,
                segmenter,
                context_chars=self._settings.context_chars,
                phrasing=self._settings.phrasing(),
                metrics=metrics,
            ),
            replica=serve.get_replica_context().replica_id.unique_id,
            metrics=metrics,
            capabilities=self.capabilities,
        )
        self._capabilities: Capabilities | None = None
        self._capabilities_at = 0.0
        self._capabilities_lock = asyncio.Lock()
        logger.info("ingress replica %s started", self._context.replica)
        loop = asyncio.get_running_loop()
        # Logs the language pairs at start-up, once the stages answer.
        self._startup = loop.create_task(self._announce())
        self._flushing = loop.create_task(self._ledger.run())
        self._watching = loop.create_task(metrics.watch_tasks())

    async def _announce(self) -> None:
        try:
            await self.capabilities()
        except Exception:
            # Stages that are still starting are asked again on first use.
            logger.warning("could not list language pairs yet", exc_info=True)

    async def capabilities(self) -> Capabilities:
        """What the stages serve now; asked again at most every 30 s."""
        async with self._capabilities_lock:
            stale = time.monotonic() - self._capabilities_at > _CAPABILITIES_TTL_S
            if self._capabilities is None or stale:
                self._capabilities = await self._stages.capabilities()
                self._capabilities_at = time.monotonic()
                logger.info(
                    "serving %d language pairs: %s",
                    len(self._capabilities.pairs),
                    " ".join(f"{s}-{t}" for s, t in self._capabilities.pairs),
                )
            return self._capabilities

    @api.get("/", include_in_schema=False)
    async def page(self) -> FileResponse:
        return FileResponse(_WEB / "index.html", headers=_PAGE_HEADERS)

    @api.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok", "replica": self._context.replica}

    @api.get("/readyz")
    async def readyz(self) -> JSONResponse:
        """Ready when Redis answers and every stage answers a question."""
        timeout_s = self._settings.readiness_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                await self._store.ping()
            redis = "ok"
        except (TimeoutError, StoreUnavailable):
            redis = f"no answer within {timeout_s:g} s"
        stages = await self._stages.readiness(timeout_s)
        ready = redis == "ok" and all(state == "ok" for state in stages.values())
        if not ready:
            logger.warning("not ready: redis %s, stages %s", redis, stages)
        return JSONResponse(
            {"ready": ready, "redis": redis, "stages": stages},
            status_code=200 if ready else 503,
        )

    @api.get("/v1/deployments")
    async def deployments(self) -> dict[str, Any]:
        """Each deployment of this application: its status and replicas by state."""
        replica_id = serve.get_replica_context().replica_id
        application = replica_id.deployment_id.app_name
        # serve.status() asks the controller and blocks until it answers.
        status = await asyncio.to_thread(serve.status)
        details = status.applications.get(application)
        if details is None:
            raise HTTPException(503, "the application's status is not known yet")
        return {
            "application": application,
            "deployments": {
                name: {
                    "status": _enum_name(deployment.status),
                    "replicas": {
                        _enum_name(state): count
                        for state, count in deployment.replica_states.items()
                    },
                }
                for name, deployment in details.deployments.items()
            },
        }

    @api.get("/v1/usage")
    async def usage(self) -> dict[str, Any]:
        """CPU seconds each stage replica has used since it started."""
        return {"stages": await self._store.usage()}

    @api.get("/v1/languages")
    async def languages(self) -> dict[str, Any]:
        capabilities = await self.capabilities()
        return {
            "transcription": capabilities.transcription,
            "pairs": [list(pair) for pair in capabilities.pairs],
            "speech": capabilities.speech,
        }

    @api.post("/v1/sessions", status_code=201, openapi_extra=_SESSION_REQUEST_BODY)
    async def create_session(
        self, http: Request, authorization: str = Header("")
    ) -> SessionCreated:
        settings = self._settings
        key_id = self._api_keys.identify(bearer(authorization))
        if key_id is None:
            logger.warning("session refused: missing or unknown API key")
            raise HTTPException(
                401,
                "send a valid API key as a Bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )
        body = await _read_body(http, _MAX_BODY_BYTES)
        try:
            request = SessionRequest.model_validate_json(body)
        except ValidationError as error:
            details = error.json(include_url=False, include_input=False)
            raise HTTPException(422, json.loads(details)) from error
        if (
            not settings.min_sample_rate
            <= request.sample_rate
            <= settings.max_sample_rate
        ):
            raise HTTPException(
                422,
                f"sample_rate must be within {settings.min_sample_rate}"
                f"..{settings.max_sample_rate} Hz",
            )
        refusal = (await self.capabilities()).refusal(request.source, request.targets)
        if refusal is not None:
            raise HTTPException(422, refusal)

        try:
            session_id, token = await self._store.create(
                request, key_id, key_limit=settings.max_sessions_per_key
            )
        except StoreUnavailable as error:
            logger.error("cannot create a session: %s", error)
            raise HTTPException(503, "the session store is unreachable") from error
        except TooManySessions as error:
            logger.warning("session refused: key %s has its most sessions", key_id)
            raise HTTPException(429, error.message) from error
        logger.info(
            "session %s: created on %s with key %s, %d targets",
            session_id,
            self._context.replica,
            key_id,
            len(request.targets),
        )
        return SessionCreated(
            session_id=session_id,
            token=token,
            websocket_path=f"/ws/{session_id}",
            expires_in_s=settings.session_ttl_s,
        )

    @api.post("/v1/sessions/{session_id}/listeners", status_code=201)
    async def add_listener(
        self, session_id: str = SessionId, authorization: str = Header("")
    ) -> ListenerCreated:
        """Issues a listen-only token; the speaker's token asks for it."""
        await self._speaker(session_id, authorization)
        limit = self._settings.max_listeners_per_session
        try:
            token = await self._store.add_listener(session_id, limit)
        except (SessionNotFound, SessionEnded) as error:
            raise HTTPException(404, error.message) from error
        if token is None:
            raise HTTPException(429, f"the session has its {limit} listener tokens")
        logger.info("session %s: listener token issued", session_id)
        return ListenerCreated(
            session_id=session_id, token=token, websocket_path=f"/ws/{session_id}"
        )

    @api.delete("/v1/sessions/{session_id}", status_code=204)
    async def close_session(
        self, session_id: str = SessionId, authorization: str = Header("")
    ) -> None:
        """Ends a session now: its connections are closed and its keys deleted."""
        await self._speaker(session_id, authorization)
        if not await self._store.close(session_id):
            raise HTTPException(404, "the session ended meanwhile")
        logger.info("session %s: closed by its client", session_id)

    async def _speaker(self, session_id: str, authorization: str) -> SessionConfig:
        token = bearer(authorization)
        if token is None:
            raise HTTPException(401, "send the session token as a Bearer token")
        try:
            config = await self._store.authenticate(session_id, token)
        except (SessionNotFound, SessionEnded) as error:
            raise HTTPException(404, error.message) from error
        except Unauthorized as error:
            raise HTTPException(401, error.message) from error
        if config.role != "speaker":
            raise HTTPException(403, "a listener's token cannot do this")
        return config

    @api.websocket("/ws/{session_id}")
    async def connect(self, websocket: WebSocket, session_id: str) -> None:
        if not _SESSION_ID.fullmatch(session_id):
            # Refused as unknown, like any id that names no session, without
            # writing what a client chose into the logs.
            session_id = "-"
        origin = websocket.headers.get("origin")
        host = websocket.headers.get("host")
        if not origin_allowed(origin, host, self._settings.allowed_origins):
            # Refused before the upgrade: the browser sees an HTTP 403.
            logger.warning("session %s: WebSocket from a foreign origin", session_id)
            await websocket.close(code=int(CloseCode.FORBIDDEN))
            return
        # Limitation: Serve's proxy accepts permessage-deflate, which every
        # browser offers; for such clients the proxy deflates synthesized
        # speech (~30 ms of CPU per MB), so a browser's resume after a long
        # absence is several times slower than the tolk client's, which
        # declines it. The proxy's uvicorn settings are not Serve options.
        await SessionConnection(websocket, session_id, self._context).run()

    async def __del__(self) -> None:
        # Ordered shutdown: stop processing, stop listening, close the pool.
        await cancel_and_wait(self._flushing)
        await cancel_and_wait(self._watching)
        await self._context.registry.aclose()
        await self._context.fanout.aclose()
        await self._store.aclose()


@api.exception_handler(StoreUnavailable)
async def _store_unavailable(_: object, error: StoreUnavailable) -> JSONResponse:
    return JSONResponse({"detail": "the session store is unreachable"}, status_code=503)
