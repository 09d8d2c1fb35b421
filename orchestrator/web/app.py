"""The console's Starlette app: server-rendered pages, their live fragments, the operations, /metrics.

Every page is plain HTML from a Jinja template (autoescaped); a few lines of JavaScript
(static/console.js) poll each page's live fragment and swap it in. Forms POST with the form token
of the browser's session (web/auth.py: `Sessions`), and every operation asks for confirmation on a
page of its own. Each route checks the rule of the gRPC method it stands for before it reads
anything (`guard`), and the app is not built with a route that checks none; what a route does
through the services is checked by them again.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.types import ASGIApp
from starlette.staticfiles import StaticFiles

from ..core.auth import Tokens
from ..core import state as m
from ..core import statuses as st
from ..core.clock import now_ms
from ..core.definitions import iter_nodes
from ..core.errors import FailedPrecondition, Unavailable
from ..core.namespaces import qualified, relative
from ..store import StoreUnavailable
from . import operations, reasons
from .auth import COOKIE, SESSION_COOKIE, Sessions, TokenGate, form_token
from .favicon import FAVICON
from .graph import Graph, layout
from .metrics import CONTENT_TYPE, NodeMetrics
from ..service.access import (OPEN, Rule, current_principal, refusal, request_namespace, rule_marked, rule_of,
                              with_rule)
from ..service.cluster import FORGET, METRICS
from ..service.errors import Refused
from ..service.http import bounded_body
from ..service.observe import bounded, seconds
from .operations import OPERATIONS
from .parts import ConsoleParts
from .timeline import timeline

MAX_FORM_BYTES = 2 * 1024 * 1024
MAX_SHOWN_JSON = 20_000
PAGE_SIZES = (20, 50, 100, 200)
SIGNALLED_KINDS = ("WAIT", "HUMAN")

Handler = Callable[[Request], Awaitable[Response]]

if TYPE_CHECKING:   # imported by the first page (`Console.env`)
    from jinja2 import Environment


def _ts(ms: int | float | None) -> str:
    if not ms:
        return "-"
    moment = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{int(ms) % 1000:03d}"


def _pretty(value: Any) -> str:
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)
    if len(text) > MAX_SHOWN_JSON:
        return text[:MAX_SHOWN_JSON] + f"\n... ({len(text)} characters; the rest is not shown)"
    return text


def _parse_time(text: str, field: str) -> int:
    """A form's time: epoch ms, or an ISO date/time read as UTC."""
    text = text.strip()
    if not text:
        return 0
    if text.isdigit():
        return int(text)
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise Refused("INVALID_ARGUMENT", f"{field}: '{text}' is neither epoch ms nor a date and time "
                                          "(YYYY-MM-DDTHH:MM, UTC)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


def statuses_by_ref(state: m.WorkflowState) -> tuple[dict[str, str], dict[str, int]]:
    """The status of each reference's latest attempt, and how many instances (loop iterations) ran."""
    latest: dict[str, m.TaskState] = {}
    keys: dict[str, set[str]] = {}
    for task in state.tasks:
        ref = task.spec.ref
        if ref not in latest or task.spec.seq > latest[ref].spec.seq:
            latest[ref] = task
        keys.setdefault(ref, set()).add(task.spec.key)
    return ({ref: str(t.runtime.status) for ref, t in latest.items()}, {ref: len(k) for ref, k in keys.items()})


class Console:
    def __init__(self, parts: ConsoleParts, sessions: Sessions | None = None) -> None:
        self.parts = parts
        self.sessions = sessions or Sessions()
        self.metrics = NodeMetrics()
        self._env: Environment | None = None

    @property
    def env(self) -> Environment:
        """The pages' templates, set up by the first page: jinja2 is 0.14 of the 2 s a node takes to
        import on this machine (2026-12-07), and a node's console may never be opened (/metrics and
        the REST API render none)."""
        if self._env is None:
            from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

            env = Environment(loader=PackageLoader("orchestrator.web", "templates"),
                              autoescape=select_autoescape(["html"]), undefined=StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True)
            env.filters.update(ts=_ts, pretty=_pretty, dur=seconds, q=lambda s: quote(str(s), safe=""),
                               rel=relative, for_people=reasons.for_people, engine_fault=reasons.is_engine_fault)
            env.globals.update(node=self.parts, statuses=st.WORKFLOW_STATUSES, terminal=st.TERMINAL_WORKFLOW,
                               operations=OPERATIONS)
            self._env = env
        return self._env

    # ------------------------------------------------------------- helpers

    def render(self, template: str, status_code: int = 200, **values: Any) -> HTMLResponse:
        values.setdefault("now", now_ms())
        values.setdefault("csrf", form_token())   # the browser session's own (web/auth.py)
        values.setdefault("signed_in", current_principal() is not None)
        return HTMLResponse(self.env.get_template(template).render(**values), status_code=status_code)

    def problem(self, status_code: int, title: str, message: str) -> HTMLResponse:
        return self.render("problem.html", status_code, title=title, message=message, page="")

    async def form(self, request: Request) -> dict[str, str]:
        """The fields of a form this browser session was shown; Refused otherwise, or past MAX_FORM_BYTES
        (declared or not: a chunked body is read only that far)."""
        body = await bounded_body(request.headers.get("content-length", ""), request.stream(), MAX_FORM_BYTES,
                                  "the form")
        fields = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}
        expected = form_token()
        if not expected or not secrets.compare_digest(fields.get("csrf", "").encode(), expected.encode()):
            raise Refused("PERMISSION_DENIED", "this form was not shown to this browser session (or the node "
                                               "restarted since it was shown): reload the page and try again")
        return fields

    async def store_down(self, request: Request, exc: Exception) -> Response:
        return self.problem(503, "Redis unavailable", f"The state store did not answer: {exc}. Pages come back "
                                                      "when it does; nothing was changed.")

    # ------------------------------------------------------------- cluster

    async def home(self, request: Request) -> Response:
        return RedirectResponse("/cluster", status_code=302)

    async def cluster(self, request: Request) -> Response:
        return await self._cluster_page("cluster.html", page="cluster")

    async def cluster_live(self, request: Request) -> Response:
        return await self._cluster_page("cluster_live.html")

    async def _cluster_page(self, template: str, **values: Any) -> Response:
        try:
            snap = await self.parts.overview.cluster()
        except Refused as exc:
            return self.problem(exc.http_status, "Refused", exc.message)
        return self.render(template, snap=snap, **values)

    async def forget_member(self, request: Request) -> Response:
        """Drop a gone member from the Members table (an operator removed the node for good).
        Cluster-wide, as stepping the leader down is: an admin's act, by a token that is not
        confined to a namespace (its route's rule, FORGET, which the service checks again)."""
        try:
            await self.form(request)
            await self.parts.overview.forget_member(request.path_params["node_id"])
        except Refused as exc:
            return self.problem(exc.http_status, "Refused", exc.message)
        except FailedPrecondition as exc:
            return self.problem(409, "Refused", str(exc))
        except Unavailable as exc:
            return self.problem(503, "etcd unavailable", str(exc))
        return RedirectResponse("/cluster", status_code=303)

    # ------------------------------------------------------------- executions

    async def executions(self, request: Request) -> Response:
        q = request.query_params
        filters = {key: q.get(key, "").strip() for key in ("name", "status", "correlation_id", "text", "from", "to",
                                                                "cursor")}
        limit = int(q["limit"]) if q.get("limit", "").isdigit() else PAGE_SIZES[0]
        error, page = "", None
        counts: dict[str, int | str] = {}
        namespace = request_namespace()
        names = sorted(d["name"] for d in await self.parts.metadata.workflow_defs())
        try:
            created_from = _parse_time(filters["from"], "from")
            created_to = _parse_time(filters["to"], "to")
            page = await operations.search(
                self.parts.workflows, name=filters["name"], status=filters["status"],
                correlation_id=filters["correlation_id"], cursor=filters["cursor"], limit=limit,
                created_from_ms=created_from, created_to_ms=created_to, text=filters["text"])
            counts = await bounded(self.parts.workflows.counts(
                name=qualified(namespace, filters["name"]) if filters["name"] else "",
                correlation_id=filters["correlation_id"], created_from_ms=created_from, created_to_ms=created_to))
        except Refused as exc:
            error = exc.message
        query = {k: v for k, v in filters.items() if v and k != "cursor"}
        query["limit"] = str(limit)
        next_link = ""
        if page is not None and page.next_page_token:
            next_link = "/executions?" + urlencode({**query, "cursor": page.next_page_token})
        return self.render("executions.html", page="executions", filters=filters, limit=limit, sizes=PAGE_SIZES,
                           names=names, error=error, results=page.workflows if page else [], counts=counts,
                           next_link=next_link, first_link="/executions?" + urlencode(query),
                           counts_note=bool(filters["name"] or filters["correlation_id"]),
                           paged=bool(filters["cursor"]),
                           status_links={status: "/executions?" + urlencode({**query, "status": status})
                                         for status in st.WORKFLOW_STATUSES})

    async def _load(self, workflow_id: str) -> m.WorkflowState | None:
        """The workflow, if it is one of the request's namespace."""
        return await self.parts.workflows.find(workflow_id)

    async def _execution_values(self, workflow_id: str) -> dict[str, Any] | None:
        state = await self._load(workflow_id)
        if state is None:
            return None
        now = now_ms()
        statuses, iterations = statuses_by_ref(state)
        graph: Graph = layout(state.definition["tasks"], statuses, iterations,
                              ended=str(state.status) if state.status in st.TERMINAL_WORKFLOW else "")
        signallable = [t for t in state.tasks if t.spec.kind in SIGNALLED_KINDS and t.runtime.status == st.IN_PROGRESS]
        return {"state": state, "graph": graph, "timeline": timeline(state, now), "now": now,
                "waiting": await self.parts.overview.waiting(state), "signallable": signallable,
                "allowed": allowed_operations(state), "parent": state.parent.split("|", 1)[0],
                "children": [(t.spec.key, t.spec.extra["child"]) for t in state.tasks if t.spec.extra.get("child")],
                "final": state.status in st.TERMINAL_WORKFLOW}

    async def execution(self, request: Request) -> Response:
        workflow_id = request.path_params["workflow_id"]
        values = await self._execution_values(workflow_id)
        if values is None:
            archived = await operations.archived(self.parts.workflows, workflow_id)
            if archived is not None:
                return self.render("archived.html", page="executions", wf=archived)
            return self.problem(404, "No such execution", f"No workflow with id '{workflow_id}' is stored "
                                                         "or archived.")
        return self.render("execution.html", page="executions", done=request.query_params.get("done", ""),
                           **values)

    async def execution_live(self, request: Request) -> Response:
        values = await self._execution_values(request.path_params["workflow_id"])
        if values is None:
            return PlainTextResponse("gone", status_code=404)
        return self.render("execution_live.html", **values)

    async def confirm(self, request: Request) -> Response:
        workflow_id, op = request.path_params["workflow_id"], request.path_params["op"]
        state = await self._load(workflow_id)
        if state is None:
            return self.problem(404, "No such execution", f"No workflow with id '{workflow_id}' is stored.")
        if op not in OPERATIONS:
            return self.problem(404, "No such operation", f"The console has no operation '{op}'.")
        task = request.query_params.get("task", "")
        return self.render("confirm.html", page="executions", state=state, op=OPERATIONS[op], task=task, error="",
                           values={})

    async def operate(self, request: Request) -> Response:
        workflow_id, op = request.path_params["workflow_id"], request.path_params["op"]
        try:
            fields = await self.form(request)
            done = await operations.run(self.parts.workflows, op, workflow_id, fields)
        except Refused as exc:
            state = await self._load(workflow_id)
            if state is None or op not in OPERATIONS:
                return self.problem(exc.http_status, "Refused", exc.message)
            return self.render("confirm.html", exc.http_status,
                               page="executions", state=state, op=OPERATIONS[op],
                               task=request.query_params.get("task", ""), error=exc.message, values={})
        return RedirectResponse(f"/executions/{quote(workflow_id, safe='')}?" + urlencode({"done": done}),
                                status_code=303)

    # ------------------------------------------------------------- definitions

    async def definitions(self, request: Request) -> Response:
        workflows = sorted(await self.parts.metadata.workflow_defs(), key=lambda d: d["name"])
        task_defs = {d["name"]: d for d in await self.parts.metadata.task_defs()}
        served = self.parts.overview.served()
        return self.render("definitions.html", page="definitions", workflows=workflows,
                           task_defs=[task_defs[n] for n in sorted(task_defs)], served=served,
                           sizes={d["name"]: sum(1 for _ in iter_nodes(d["tasks"])) for d in workflows})

    async def definition(self, request: Request, error: str = "", values: dict[str, str] | None = None,
                         status_code: int = 200) -> Response:
        name = request.path_params["name"]
        versions = sorted(await self.parts.metadata.workflow_defs(name), key=lambda d: d["version"])
        if not versions:
            return self.problem(404, "No such definition", f"No workflow definition named '{name}' is registered.")
        wanted = request.query_params.get("version", "")
        chosen = next((d for d in versions if str(d["version"]) == wanted), versions[-1])
        example = {key: "" for key in chosen.get("inputParameters", [])}
        values = values or {"input": json.dumps(example, indent=2), "correlation_id": ""}
        return self.render("definition.html", status_code, page="definitions", definition=chosen, versions=versions,
                           graph=layout(chosen["tasks"]), error=error, values=values,
                           idempotency_key=uuid.uuid4().hex)

    async def start(self, request: Request) -> Response:
        name = request.path_params["name"]
        fields: dict[str, str] = {}
        try:
            fields = await self.form(request)
            fields["name"] = name
            workflow_id, created = await operations.start(self.parts.workflows, fields)
        except Refused as exc:
            return await self.definition(request, exc.message, fields or None, exc.http_status)
        done = "started" if created else "already started (same form submitted twice)"
        return RedirectResponse(f"/executions/{quote(workflow_id, safe='')}?" + urlencode({"done": done}),
                                status_code=303)

    # ------------------------------------------------------------- machine endpoints

    async def logout(self, request: Request) -> Response:
        """Sign out: the token's cookie and the session's are removed (the next page starts a new
        session); a form of this session only, so that no other site signs anyone out."""
        try:
            await self.form(request)
        except Refused as exc:
            return self.problem(exc.http_status, "Refused", exc.message)
        response = RedirectResponse("/login", status_code=303)
        for name in (COOKIE, SESSION_COOKIE):
            response.raw_headers.append((b"set-cookie", self.sessions.cookie(request.scope, name, "", forget=True)))
        return response

    async def metrics_page(self, request: Request) -> Response:
        try:
            text = await self.metrics.render(self.parts.overview.metrics)
        except Refused as exc:
            return self.problem(exc.http_status, "Refused", exc.message)
        return Response(text, media_type=CONTENT_TYPE)

    async def healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def favicon(self, request: Request) -> Response:
        return Response(FAVICON, media_type="image/x-icon", headers={"Cache-Control": "public, max-age=86400"})


def allowed_operations(state: m.WorkflowState) -> list[str]:
    """What the console offers for a workflow in its current status (the API checks again)."""
    status = state.status
    if status == st.RUNNING:
        return ["pause", "terminate", "compensate"]
    if status == st.PAUSED:
        return ["resume", "terminate", "compensate"]
    if status == st.COMPENSATING:
        return ["terminate"]
    if status in (st.FAILED, st.TIMED_OUT):
        return ["retry", "restart"]
    return ["restart"]


def guard(console: Console, rule: Rule | str | Callable[[Request], Rule], endpoint: Handler) -> Handler:
    """`endpoint`, refusing (before it reads anything) a caller `rule` does not allow: a Rule, a gRPC
    method ("Service/Method") whose rule it follows, or the rule of each request."""
    fixed = rule_of(rule) if isinstance(rule, str) else rule

    async def checked(request: Request) -> Response:
        wanted = fixed if isinstance(fixed, Rule) else fixed(request)
        refused = refusal(wanted)
        if refused is not None:
            return console.problem(refused.http_status, "Refused", refused.message)
        return await endpoint(request)
    checked.__name__ = endpoint.__name__
    return with_rule(checked, fixed if isinstance(fixed, Rule) else Rule("operator", endpoint.__name__))  # type: ignore[no-any-return]


def _operation_rule(request: Request) -> Rule:
    op = OPERATIONS.get(request.path_params["op"])
    return rule_of(op.method if op is not None else "WorkflowService/(no such operation)")


def unguarded(routes: list[BaseRoute]) -> list[str]:
    """The paths of routes whose endpoint checks no rule (none may be: `build_app` refuses them)."""
    missing = []
    for route in routes:
        if isinstance(route, Mount):
            if isinstance(route.app, Router):
                missing += [route.path + path for path in unguarded(route.routes)]
            elif route.path != "/static":   # the static files are the only app mounted as such, and open
                missing.append(route.path)
        elif isinstance(route, Route) and rule_marked(route.endpoint) is None:
            missing.append(route.path)
    return missing


def build_app(parts: ConsoleParts, more: list[BaseRoute] | None = None,
              tokens: Tokens | None = None, secure_cookies: bool = False) -> ASGIApp:
    """The console's routes, and `more` beside them on the same port (the node adds Conductor's API);
    behind the token gate (which only settles the namespace when the node has no tokens).
    `secure_cookies`: the console's cookies are Secure even over http (a TLS-terminating proxy in front)."""
    sessions = Sessions(secure_cookies)
    console = Console(parts, sessions)
    login = Login(console, tokens)
    static = Path(__file__).resolve().parent / "static"

    def route(path: str, rule: Rule | str | Callable[[Request], Rule], endpoint: Handler,
              methods: list[str] | None = None) -> Route:
        return Route(path, guard(console, rule, endpoint), methods=methods)
    routes = [
        route("/", "ClusterService/GetClusterStatus", console.home),
        route("/cluster", "ClusterService/GetClusterStatus", console.cluster),
        route("/cluster/live", "ClusterService/GetClusterStatus", console.cluster_live),
        route("/executions", "WorkflowService/SearchWorkflows", console.executions),
        route("/executions/{workflow_id}", "WorkflowService/GetWorkflow", console.execution),
        route("/executions/{workflow_id}/live", "WorkflowService/GetWorkflow", console.execution_live),
        route("/executions/{workflow_id}/confirm/{op}", "WorkflowService/GetWorkflow", console.confirm),
        route("/executions/{workflow_id}/{op}", _operation_rule, console.operate, methods=["POST"]),
        route("/definitions", "MetadataService/ListWorkflowDefs", console.definitions),
        route("/definitions/{name}", "MetadataService/GetWorkflowDef", console.definition),
        route("/definitions/{name}/start", "WorkflowService/StartWorkflow", console.start, methods=["POST"]),
        route("/metrics", METRICS, console.metrics_page),
        route("/healthz", OPEN, console.healthz),
        route("/favicon.ico", OPEN, console.favicon),
        route("/cluster/members/{node_id}/forget", FORGET, console.forget_member, methods=["POST"]),
        route("/login", OPEN, login.page, methods=["GET"]),
        route("/login", OPEN, login.sign_in, methods=["POST"]),
        route("/logout", OPEN, console.logout, methods=["POST"]),
        Mount("/static", StaticFiles(directory=static), name="static"),
        *(more or []),
    ]
    missing = unguarded(routes)
    if missing:
        raise RuntimeError(f"routes that check no rule: {', '.join(missing)} (give each the gRPC method it stands "
                           "for, or OPEN)")
    app = Starlette(routes=routes, exception_handlers={StoreUnavailable: console.store_down})
    return TokenGate(app, tokens, sessions)


class Login:
    """/login: a token typed into a form becomes an HttpOnly cookie the token gate reads."""

    def __init__(self, console: Console, tokens: Tokens | None) -> None:
        self.console = console
        self.tokens = tokens

    async def page(self, request: Request) -> Response:
        return self.console.render("login.html", page="", error="", next=_local(request.query_params.get("next")))

    async def sign_in(self, request: Request) -> Response:
        try:
            fields = await self.console.form(request)
        except Refused as exc:
            return self.console.render("login.html", exc.http_status, page="", error=exc.message, next="/cluster")
        target = _local(fields.get("next"))
        token = fields.get("token", "").strip()
        if self.tokens is None:
            return RedirectResponse(target, status_code=303)
        if self.tokens.find(token) is None:
            return self.console.render("login.html", 401, page="", error="unknown token", next=target)
        response = RedirectResponse(target, status_code=303)
        sessions = self.console.sessions
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=sessions.secure(request.scope))
        # a new session on signing in: a form token seen before (by anyone) is good for nothing now
        response.raw_headers.append((b"set-cookie", sessions.cookie(request.scope, SESSION_COOKIE, sessions.new_id())))
        return response


def _local(target: str | None) -> str:
    """Only a path on this site (never another host) to go back to after signing in."""
    return target if target and target.startswith("/") and not target.startswith("//") else "/cluster"
