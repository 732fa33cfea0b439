"""PostgREST 12's request handling, emulated with psycopg: the same SQL, the same status codes.

For the parts pgrelay relies on, this issues what PostgREST 12.0.2 issues (read from the statement log
of the real server), connected as the authenticator role:

    BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY        -- GET, and POST to a STABLE/IMMUTABLE function
    BEGIN ISOLATION LEVEL READ COMMITTED READ WRITE       -- POST to a VOLATILE function
    select set_config('search_path', $1, true), set_config('role', $2, true),
           set_config('request.jwt.claims', $3, true), set_config('request.method', $4, true),
           set_config('request.path', $5, true), set_config('request.headers', $6, true),
           set_config('request.cookies', $7, true)
    -- a function: only the keys sent become named arguments, typed from pg_proc
    WITH pgrst_source AS (SELECT pgrst_call.pgrst_scalar FROM (SELECT $1::json AS json_data) pgrst_payload,
         LATERAL (SELECT CASE WHEN json_typeof(...) = 'array' THEN ... ELSE json_build_array(...) END AS val) ...,
         LATERAL (SELECT "task", "queue" FROM json_to_recordset(val) AS _("task" text, "queue" text) LIMIT 1) pgrst_body,
         LATERAL (SELECT "pgrelay"."enqueue"("task" := pgrst_body."task", "queue" := pgrst_body."queue")
                  pgrst_scalar) pgrst_call)
    SELECT coalesce(json_agg(_postgrest_t.pgrst_scalar)->0, 'null') FROM (SELECT * FROM pgrst_source) _postgrest_t
    -- a view: SELECT "pgrelay"."queue_stats".* FROM "pgrelay"."queue_stats" WHERE ... = $1, as json_agg
    COMMIT   (ROLLBACK on an error, whose SQLSTATE becomes the HTTP status by PostgREST's table)

Values never enter the SQL text: the body is one parameter, filter values are parameters, and every
name (schema, function, argument, type, column) is quoted with psycopg.sql.Identifier. What it does not
emulate (OpenAPI, embedding, Prefer, writes to views, ...) raises NotImplementedError, so a test can never
pass against behaviour that was only imagined.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import jwt
import psycopg
from psycopg import sql

from tests.postgrest.api import Response

JSON_HEADERS = {"content-type": "application/json; charset=utf-8"}
OPERATORS = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}  # PostgREST's filters


def http_status(sqlstate: str, authed: bool) -> int:
    """PostgREST 12.0.2's HTTP status for an error with this SQLSTATE (authed: the request runs as a JWT role).

    Measured against the real binary (test_emulation.py); later PostgREST versions differ in places
    (they answer 500 for 42P17, 53400 and class 54).
    """
    c = sqlstate
    if c.startswith("08"):
        return 503  # connection exception
    if c.startswith("09"):
        return 500  # triggered action exception
    if c.startswith(("0L", "0P")):
        return 403  # invalid grantor, invalid role specification
    if c in ("23503", "23505"):
        return 409  # foreign key / unique violation
    if c == "25006":
        return 405  # read-only transaction: a GET of a function that writes
    if c.startswith("25"):
        return 500
    if c.startswith("28"):
        return 403  # invalid authorization specification
    if c.startswith(("2D", "38", "39", "3B", "40")):
        return 500  # (PostgREST retries 40001 without limit before it would get here)
    if c.startswith("53"):
        return 503  # insufficient resources
    if c.startswith("54"):
        return 413  # program limit exceeded
    if c.startswith(("55", "57", "58", "F0", "HV")):
        return 500
    if c == "P0001":
        return 400  # a bare RAISE EXCEPTION
    if c.startswith("P0"):
        return 500
    if c.startswith("XX"):
        return 500
    if c == "42883":
        return 404  # undefined function
    if c == "42P01":
        return 404  # undefined table
    if c == "42501":
        return 403 if authed else 401
    if c.startswith("PT"):
        digits = c[2:]
        return int(digits) if digits.isdigit() and 100 <= int(digits) <= 999 else 500
    return 400


def _error(status: int, code: str, message: str, details: str | None = None, hint: str | None = None,
           headers: Mapping[str, str] | None = None) -> Response:
    body = json.dumps({"code": code, "details": details, "hint": hint, "message": message}).encode()
    return Response(status, {**JSON_HEADERS, **(headers or {})}, body)


@dataclass(frozen=True)
class Param:
    name: str
    type_schema: str
    type_name: str
    required: bool


@dataclass(frozen=True)
class Routine:
    schema: str
    name: str
    params: tuple[Param, ...]
    volatile: bool
    returns_set: bool
    returns_row: bool
    returns_void: bool


class EmulatedPostgrest:
    """Handles one request at a time over one connection as the authenticator role."""

    def __init__(self, conninfo: str, *, schema: str, anon_role: str, jwt_secret: str,
                 extra_search_path: tuple[str, ...] = ("public",)) -> None:
        self.conn = psycopg.connect(conninfo, autocommit=True)
        self.schema = schema
        self.anon_role = anon_role
        self.jwt_secret = jwt_secret
        self.search_path = ", ".join(f'"{s}"' for s in (schema, *extra_search_path))

    def close(self) -> None:
        self.conn.close()

    # -- the request ------------------------------------------------------------------------------

    def __call__(self, method: str, target: str, headers: Mapping[str, str], body: bytes | None) -> Response:
        headers = {k.lower(): v for k, v in headers.items()}
        for name in ("prefer", "range", "accept-profile", "content-profile"):
            if name in headers:
                raise NotImplementedError(f"the emulation does not handle the {name} header")
        accept = headers.get("accept", "*/*")
        if not any(a.strip().split(";")[0] in ("*/*", "application/json") for a in accept.split(",")):
            raise NotImplementedError(f"the emulation answers only JSON, not Accept: {accept}")

        # authentication: no JWT is the anon role; a bad one is refused before any SQL runs
        authorization = headers.get("authorization")
        if authorization is None:
            claims: dict[str, Any] = {"role": self.anon_role}
        else:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token:
                raise NotImplementedError(f"the emulation handles only Bearer tokens, not {scheme!r}")
            try:
                claims = jwt.decode(token, self.jwt_secret, algorithms=["HS256"], options={"verify_aud": False})
            except jwt.ExpiredSignatureError:
                return self._jwt_error("JWT expired")
            except jwt.InvalidTokenError as e:
                return self._jwt_error(f"JWT invalid: {e}")
        role = claims.get("role", self.anon_role)
        authed = role != self.anon_role

        parts = urlsplit(target)
        path = parts.path
        query = parse_qsl(parts.query, keep_blank_values=True)
        if len({k for k, _ in query}) != len(query):
            raise NotImplementedError(f"the emulation does not handle repeated query parameters: {target}")

        if path.startswith("/rpc/") and path.count("/") == 2:
            return self._rpc(method, path, path[len("/rpc/"):], dict(query), headers, body, role, claims, authed)
        if path.count("/") == 1 and len(path) > 1:
            return self._read(method, path, path[1:], query, headers, body, role, claims, authed)
        raise NotImplementedError(f"the emulation does not serve {path}")

    def _jwt_error(self, message: str) -> Response:
        return _error(401, "PGRST301", message,
                      headers={"www-authenticate": f'Bearer error="invalid_token", error_description="{message}"'})

    # -- functions --------------------------------------------------------------------------------

    def _rpc(self, method: str, path: str, name: str, query: dict[str, str], headers: dict[str, str],
             body: bytes | None, role: str, claims: dict[str, Any], authed: bool) -> Response:
        if method not in ("GET", "POST"):
            return _error(405, "PGRST101", f"Cannot use the {method} method on RPC")
        if method == "GET":
            if body:
                raise NotImplementedError("a GET with a body")
            payload_text = json.dumps(query)
            keys = set(query)
        else:
            if query:
                raise NotImplementedError(f"query parameters on a POST to a function: {query}")
            content_type = headers.get("content-type", "application/json").split(";")[0].strip()
            if content_type != "application/json":
                raise NotImplementedError(f"the emulation reads only JSON bodies, not {content_type}")
            payload_text = (body or b"").decode() or "{}"
            try:
                payload = json.loads(payload_text)
            except ValueError:
                return _error(400, "PGRST102", "Empty or invalid json")
            if isinstance(payload, dict):
                keys = set(payload)
            elif isinstance(payload, list) and payload and all(isinstance(p, dict) for p in payload):
                keys = set(payload[0])
                if any(set(p) != keys for p in payload):
                    return _error(400, "PGRST102", "All object keys must match")
            else:
                raise NotImplementedError("a body that is not a JSON object (or a non-empty array of them)")

        # PostgREST finds the function in its schema cache before any SQL runs
        candidates = [r for r in self._routines(name)
                      if keys <= {p.name for p in r.params} and {p.name for p in r.params if p.required} <= keys]
        if not candidates:
            listed = ", ".join(sorted(keys))
            return _error(404, "PGRST202", f"Could not find the function {self.schema}.{name}"
                          + (f"({listed})" if keys else " without parameters") + " in the schema cache")
        if len(candidates) > 1:
            return _error(300, "PGRST203", f"Could not choose the best candidate function between overloads of {name}")
        routine = candidates[0]

        sent = [p for p in routine.params if p.name in keys]
        function = sql.Identifier(routine.schema, routine.name)
        if sent:
            arguments = sql.SQL(", ").join(
                sql.SQL("{} := pgrst_body.{}").format(sql.Identifier(p.name), sql.Identifier(p.name)) for p in sent)
            columns = sql.SQL(", ").join(sql.Identifier(p.name) for p in sent)
            definitions = sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(p.name), sql.Identifier(p.type_schema, p.type_name)) for p in sent)
            sources = sql.SQL(
                "(SELECT %s::json AS json_data) pgrst_payload, "
                "LATERAL (SELECT CASE WHEN json_typeof(pgrst_payload.json_data) = 'array' THEN pgrst_payload.json_data "
                "ELSE json_build_array(pgrst_payload.json_data) END AS val) pgrst_uniform_json, "
                "LATERAL (SELECT {columns} FROM json_to_recordset(pgrst_uniform_json.val) AS _({definitions}) LIMIT 1) "
                "pgrst_body, "
            ).format(columns=columns, definitions=definitions)
            params: list[Any] = [payload_text]
        else:
            arguments, sources, params = sql.SQL(""), sql.SQL(""), []
        if routine.returns_row:
            call = sql.SQL("LATERAL {function}({arguments}) pgrst_call").format(function=function, arguments=arguments)
            selected, aggregated = sql.SQL("pgrst_call.*"), sql.SQL("json_agg(_postgrest_t)")
        else:
            call = sql.SQL("LATERAL (SELECT {function}({arguments}) pgrst_scalar) pgrst_call").format(
                function=function, arguments=arguments)
            selected, aggregated = sql.SQL("pgrst_call.pgrst_scalar"), sql.SQL("json_agg(_postgrest_t.pgrst_scalar)")
        if routine.returns_set:
            result = sql.SQL("coalesce({}, '[]')").format(aggregated)
        else:
            result = sql.SQL("coalesce({}->0, 'null')").format(aggregated)
        statement = sql.SQL(
            "WITH pgrst_source AS (SELECT {selected} FROM {sources}{call}) "
            "SELECT {result}::text FROM (SELECT * FROM pgrst_source) _postgrest_t"
        ).format(selected=selected, sources=sources, call=call, result=result)

        read_only = method == "GET" or not routine.volatile
        answer = self._run(statement, params, read_only, role, claims, method, path, headers, authed)
        if answer.status == 200 and routine.returns_void:
            return Response(204, {}, b"")
        return answer

    def _routines(self, name: str) -> list[Routine]:
        found = []
        procs = self.conn.execute(
            """SELECT p.oid, p.provolatile, p.proretset, p.pronargdefaults,
                      t.typtype = 'c' OR p.prorettype = 'pg_catalog.record'::pg_catalog.regtype,
                      p.prorettype = 'pg_catalog.void'::pg_catalog.regtype
               FROM pg_catalog.pg_proc p
               JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
               JOIN pg_catalog.pg_type t ON t.oid = p.prorettype
               WHERE n.nspname = %s AND p.proname = %s AND p.prokind = 'f'
                 AND p.prorettype <> 'pg_catalog.trigger'::pg_catalog.regtype""",
            [self.schema, name]).fetchall()
        for oid, volatility, returns_set, n_defaults, returns_row, returns_void in procs:
            args = self.conn.execute(
                """SELECT coalesce(p.proargnames[a.ord], ''), coalesce(p.proargmodes[a.ord], 'i'), tn.nspname, t.typname
                   FROM pg_catalog.pg_proc p,
                        unnest(coalesce(p.proallargtypes, p.proargtypes::pg_catalog.oid[])) WITH ORDINALITY AS a(typ, ord)
                   JOIN pg_catalog.pg_type t ON t.oid = a.typ
                   JOIN pg_catalog.pg_namespace tn ON tn.oid = t.typnamespace
                   WHERE p.oid = %s ORDER BY a.ord""", [oid]).fetchall()
            inputs = [(arg, type_schema, type_name) for arg, mode, type_schema, type_name in args if mode in ("i", "b", "v")]
            if any(arg == "" for arg, _, _ in inputs):
                raise NotImplementedError(f"{name}: functions with unnamed parameters")
            n_required = len(inputs) - n_defaults
            found.append(Routine(
                self.schema, name,
                tuple(Param(arg, ts, tn, i < n_required) for i, (arg, ts, tn) in enumerate(inputs)),
                volatility == "v", returns_set, returns_row, returns_void))
        return found

    # -- tables and views -------------------------------------------------------------------------


    def _read(self, method: str, path: str, name: str, query: list[tuple[str, str]], headers: dict[str, str],
              body: bytes | None, role: str, claims: dict[str, Any], authed: bool) -> Response:
        if method != "GET":
            raise NotImplementedError(f"the emulation only reads tables and views, not {method} {path}")
        relation = sql.Identifier(self.schema, name)
        conditions: list[sql.Composable] = []
        params: list[Any] = []
        order = sql.SQL("")
        limit: int | None = None
        for key, value in query:
            if key == "order":
                column, _, direction = value.partition(".")
                if direction not in ("", "asc", "desc"):
                    raise NotImplementedError(f"order={value}")
                order = sql.SQL(" ORDER BY {}.{} {}").format(
                    relation, sql.Identifier(column), sql.SQL("DESC" if direction == "desc" else "ASC"))
            elif key == "limit":
                limit = int(value)
            elif key in ("select", "offset", "and", "or", "on_conflict", "columns"):
                raise NotImplementedError(f"the query parameter {key}")
            else:
                operator, _, operand = value.partition(".")
                if operator == "is" and operand in ("null", "true", "false"):
                    conditions.append(sql.SQL("{}.{} IS {}").format(relation, sql.Identifier(key), sql.SQL(operand.upper())))
                elif operator in OPERATORS:
                    conditions.append(sql.SQL("{}.{} {} %s").format(
                        relation, sql.Identifier(key), sql.SQL(OPERATORS[operator])))
                    params.append(operand)  # a str goes as type unknown: PostgreSQL gives it the column's type
                else:
                    raise NotImplementedError(f"the filter {key}={value}")
        where = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("")
        limit_clause = sql.SQL("")
        if limit is not None:
            limit_clause = sql.SQL(" LIMIT %s")
            params.append(limit)
        statement = sql.SQL(
            "WITH pgrst_source AS (SELECT {relation}.* FROM {relation}{where}{order}{limit}) "
            "SELECT coalesce(json_agg(_postgrest_t), '[]')::text FROM (SELECT * FROM pgrst_source) _postgrest_t"
        ).format(relation=relation, where=where, order=order, limit=limit_clause)
        return self._run(statement, params, True, role, claims, method, path, headers, authed)

    # -- the transaction --------------------------------------------------------------------------

    def _run(self, statement: sql.Composable, params: list[Any], read_only: bool, role: str,
             claims: dict[str, Any], method: str, path: str, headers: dict[str, str], authed: bool) -> Response:
        conn = self.conn
        if read_only:
            conn.execute("BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY")
        else:
            conn.execute("BEGIN ISOLATION LEVEL READ COMMITTED READ WRITE")
        try:
            conn.execute(
                "select set_config('search_path', %s, true), set_config('role', %s, true), "
                "set_config('request.jwt.claims', %s, true), set_config('request.method', %s, true), "
                "set_config('request.path', %s, true), set_config('request.headers', %s, true), "
                "set_config('request.cookies', %s, true)",
                [self.search_path, role, json.dumps(claims), method, path, json.dumps(headers), "{}"])
            row = conn.execute(statement, params).fetchone()
        except psycopg.Error as e:
            conn.execute("ROLLBACK")
            diag = e.diag
            sqlstate = diag.sqlstate or "XX000"
            status = http_status(sqlstate, authed)
            extra = {"www-authenticate": "Bearer"} if status == 401 else None
            return _error(status, sqlstate, diag.message_primary or str(e), diag.message_detail, diag.message_hint,
                          headers=extra)
        conn.execute("COMMIT")
        assert row is not None
        return Response(200, JSON_HEADERS, row[0].encode())
