"""A normalised snapshot of everything schema ``pgrelay`` defines, for comparing two installs.

``schema_snapshot(conn)`` reads the catalog of the connected database and returns a dict made only of
names and definitions (no OIDs, no row data), so two databases that hold the same schema give equal
snapshots however the schema got there: ``jobs-migrate``, ``CREATE EXTENSION pgrelay``, installing
twice or concurrently, or an older version plus every upgrade script.

It covers: the schema itself (owner, grants, comment, default privileges); tables, views, sequences,
indexes and composite types with their columns (order, type, NOT NULL, default, identity, generated,
collation, column grants), options, row security and owner; constraints; triggers; policies;
functions and procedures (identity arguments, arguments with defaults, result, language, volatility,
strictness, parallel safety, SECURITY DEFINER, SET config, cost, rows, source); other types (enums,
domains, ranges); comments on all of these; and grants as (grantee, privilege, grantable, grantor).

Left out: the partitions of the history that pgrelay makes by date (``_finished_YYYYMMDD`` and its
``_s``/``_x``, the same for ``_attempts``) and the history an upgrade from 0.4 kept in place
(``_finished_before_YYYYMMDD``, ``_attempts_before_YYYYMMDD``), with their indexes, constraints and
triggers: which exist depends on the day and on how the database got its schema, not on the schema
(tests/sql/test_partitions.py checks them).

``snapshot_differences(a, b)`` lists where two snapshots differ, one line per path, for assertion
messages that point at the object instead of printing two large dicts.

Definitions are rendered with ``search_path = pg_catalog`` so that every pgrelay object appears
schema-qualified, whatever the caller's search_path.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

import psycopg
from psycopg.rows import tuple_row

__all__ = ["schema_snapshot", "snapshot_differences"]

# aclexplode over the effective ACL (NULL means the built-in default for the owner), as sorted rows
_ACL = """(SELECT coalesce(jsonb_agg(e ORDER BY e), '[]'::jsonb)
           FROM (SELECT jsonb_build_array(CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
                                          a.privilege_type, a.is_grantable, pg_get_userbyid(a.grantor)) AS e
                 FROM aclexplode(coalesce({acl}, acldefault({kind}, {owner}))) a) s)"""


# the history's partitions made by date (see the module docstring)
DATED_PARTITION = re.compile(r"^_(finished|attempts)_(\d{8}(_[sx])?|before_\d{8})$")


def _acl(acl: str, kind: str, owner: str) -> str:
    return _ACL.format(acl=acl, kind=kind, owner=owner)


_REL_ACL = _acl("c.relacl", "(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END)::\"char\"", "c.relowner")

_SCHEMA = f"""
SELECT pg_get_userbyid(n.nspowner), {_acl('n.nspacl', "'n'", 'n.nspowner')},
       obj_description(n.oid, 'pg_namespace')
FROM pg_namespace n WHERE n.nspname = %(schema)s
"""

_DEFAULT_ACLS = """
SELECT pg_get_userbyid(d.defaclrole), d.defaclobjtype::text,
       (SELECT jsonb_agg(e ORDER BY e)
        FROM (SELECT jsonb_build_array(CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
                                       a.privilege_type, a.is_grantable) AS e
              FROM aclexplode(d.defaclacl) a) s)
FROM pg_default_acl d JOIN pg_namespace n ON n.oid = d.defaclnamespace
WHERE n.nspname = %(schema)s
ORDER BY 1, 2
"""

_RELATIONS = f"""
SELECT c.relname, c.relkind::text, pg_get_userbyid(c.relowner), c.relpersistence::text,
       coalesce(c.reloptions, '{{}}'), c.relrowsecurity, c.relforcerowsecurity,
       CASE WHEN c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
            THEN {_REL_ACL} END,
       CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid, true) END,
       CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END,
       CASE WHEN c.relispartition THEN pg_get_expr(c.relpartbound, c.oid) END
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S', 'c')
ORDER BY c.relname
"""

_COLUMNS = """
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid), a.attidentity::text, a.attgenerated::text,
       CASE WHEN a.attcollation <> t.typcollation THEN co.collname END,
       (SELECT jsonb_agg(e ORDER BY e)
        FROM (SELECT jsonb_build_array(CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(x.grantee) END,
                                       x.privilege_type, x.is_grantable, pg_get_userbyid(x.grantor)) AS e
              FROM aclexplode(a.attacl) x) s)
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
LEFT JOIN pg_collation co ON co.oid = a.attcollation
WHERE n.nspname = %(schema)s AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c')
  AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY c.relname, a.attnum
"""

_SEQUENCES = """
SELECT c.relname, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmin, s.seqmax,
       s.seqcache, s.seqcycle,
       (SELECT r.relname || '.' || a.attname
        FROM pg_depend dep
        JOIN pg_class r ON r.oid = dep.refobjid
        JOIN pg_attribute a ON a.attrelid = dep.refobjid AND a.attnum = dep.refobjsubid
        WHERE dep.classid = 'pg_class'::regclass AND dep.objid = c.oid
          AND dep.refclassid = 'pg_class'::regclass AND dep.deptype IN ('a', 'i')
        LIMIT 1)
FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s
ORDER BY c.relname
"""

_INDEXES = """
SELECT ic.relname, tc.relname, pg_get_indexdef(i.indexrelid), i.indisprimary, i.indisunique,
       i.indisvalid, i.indisready, i.indisclustered, i.indisreplident
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_class tc ON tc.oid = i.indrelid
JOIN pg_namespace n ON n.oid = ic.relnamespace
WHERE n.nspname = %(schema)s
ORDER BY ic.relname
"""

_CONSTRAINTS = """
SELECT coalesce(c.relname, t.typname), con.conname, con.contype::text, pg_get_constraintdef(con.oid, true),
       con.condeferrable, con.condeferred, con.convalidated, coalesce(ic.relname, '')
FROM pg_constraint con
JOIN pg_namespace n ON n.oid = con.connamespace
LEFT JOIN pg_class c ON c.oid = con.conrelid
LEFT JOIN pg_type t ON t.oid = con.contypid
LEFT JOIN pg_class ic ON ic.oid = con.conindid
WHERE n.nspname = %(schema)s
ORDER BY 1, 2
"""

_TRIGGERS = """
SELECT c.relname, tg.tgname, pg_get_triggerdef(tg.oid, true), tg.tgenabled::text
FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND NOT tg.tgisinternal
ORDER BY 1, 2
"""

_POLICIES = """
SELECT c.relname, p.polname, p.polcmd::text, p.polpermissive,
       (SELECT array_agg(r.name ORDER BY r.name)
        FROM (SELECT CASE WHEN o = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(o) END AS name FROM unnest(p.polroles) o) r),
       pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid)
FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s
ORDER BY 1, 2
"""

_FUNCTIONS = f"""
SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
       p.prokind::text, pg_get_function_arguments(p.oid), pg_get_function_result(p.oid),
       l.lanname, p.provolatile::text, p.proisstrict, p.proleakproof, p.proparallel::text, p.prosecdef,
       p.proretset, coalesce(p.proconfig, '{{}}'), p.procost, p.prorows, pg_get_userbyid(p.proowner),
       {_acl('p.proacl', "'f'", 'p.proowner')},
       CASE WHEN p.prosqlbody IS NOT NULL THEN pg_get_function_sqlbody(p.oid) ELSE p.prosrc END,
       p.probin
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_language l ON l.oid = p.prolang
WHERE n.nspname = %(schema)s
ORDER BY 1
"""

# Types other than the implicit ones (arrays, table and view rowtypes); composite types declared with
# CREATE TYPE ... AS (...) are here too, their attributes are under "relations".
_TYPES = f"""
SELECT t.typname, t.typtype::text, pg_get_userbyid(t.typowner), {_acl('t.typacl', "'T'", 't.typowner')},
       CASE WHEN t.typtype = 'e'
            THEN (SELECT jsonb_agg(e.enumlabel ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid) END,
       CASE WHEN t.typtype = 'd'
            THEN jsonb_build_object('base', format_type(t.typbasetype, t.typtypmod), 'not_null', t.typnotnull,
                                    'default', t.typdefault) END,
       CASE WHEN t.typtype = 'r'
            THEN (SELECT jsonb_build_object('subtype', format_type(r.rngsubtype, NULL))
                  FROM pg_range r WHERE r.rngtypid = t.oid) END
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
LEFT JOIN pg_class c ON c.oid = t.typrelid
WHERE n.nspname = %(schema)s
  AND NOT (t.typcategory = 'A' AND t.typelem <> 0)
  AND (t.typrelid = 0 OR c.relkind = 'c')
ORDER BY t.typname
"""

# Every comment on an object that lives in the schema (columns included), by its stable identity.
_COMMENTS = """
SELECT o.type, o.identity, d.description
FROM pg_description d, LATERAL pg_identify_object(d.classoid, d.objoid, d.objsubid) o
WHERE o.schema = %(schema)s OR (o.type = 'schema' AND o.identity = %(schema)s)
ORDER BY 1, 2
"""


def schema_snapshot(conn: psycopg.Connection, schema: str = "pgrelay") -> dict[str, Any]:
    """A normalised description of ``schema`` in the connected database (see the module docstring).

    Works on an autocommit connection or inside the caller's transaction; leaves the session's
    search_path as it found it.
    """
    cur = conn.cursor(row_factory=tuple_row)
    params = {"schema": schema}
    old_path = cur.execute("SELECT current_setting('search_path')").fetchone()[0]
    cur.execute("SELECT set_config('search_path', 'pg_catalog', false)")
    try:
        row = cur.execute(_SCHEMA, params).fetchone()
        if row is None:
            return {"schema": None}
        snap: dict[str, Any] = {
            "schema": {"owner": row[0], "acl": row[1], "comment": row[2]},
            "default_acls": [list(r) for r in cur.execute(_DEFAULT_ACLS, params)],
        }

        relations: dict[str, dict[str, Any]] = {}
        for (name, kind, owner, persistence, options, rls, force_rls, acl, viewdef, partkey,
             partbound) in cur.execute(_RELATIONS, params):
            relations[name] = {
                "kind": kind, "owner": owner, "persistence": persistence, "options": sorted(options),
                "row_security": rls, "force_row_security": force_rls, "acl": acl, "definition": viewdef,
                "partition_key": partkey, "partition_bound": partbound, "columns": [],
            }
        for rel, col, typ, notnull, default, identity, generated, collation, acl in cur.execute(_COLUMNS, params):
            relations[rel]["columns"].append({
                "name": col, "type": typ, "not_null": notnull, "default": default, "identity": identity,
                "generated": generated, "collation": collation, "acl": acl,
            })
        snap["relations"] = relations

        snap["sequences"] = {
            name: {"type": typ, "start": start, "increment": inc, "min": mn, "max": mx, "cache": cache,
                   "cycle": cycle, "owned_by": owned_by}
            for name, typ, start, inc, mn, mx, cache, cycle, owned_by in cur.execute(_SEQUENCES, params)
        }
        snap["indexes"] = {
            name: {"table": table, "definition": definition, "primary": primary, "unique": unique,
                   "valid": valid, "ready": ready, "clustered": clustered, "replica_identity": replident}
            for name, table, definition, primary, unique, valid, ready, clustered, replident
            in cur.execute(_INDEXES, params)
        }
        snap["constraints"] = {
            f"{owner}.{name}": {"type": contype, "definition": definition, "deferrable": deferrable,
                                "deferred": deferred, "validated": validated, "index": index}
            for owner, name, contype, definition, deferrable, deferred, validated, index
            in cur.execute(_CONSTRAINTS, params)
        }
        snap["triggers"] = {
            f"{table}.{name}": {"definition": definition, "enabled": enabled}
            for table, name, definition, enabled in cur.execute(_TRIGGERS, params)
        }
        snap["policies"] = {
            f"{table}.{name}": {"command": cmd, "permissive": permissive, "roles": roles, "using": qual,
                                "with_check": check}
            for table, name, cmd, permissive, roles, qual, check in cur.execute(_POLICIES, params)
        }
        snap["functions"] = {
            signature: {
                "kind": kind, "arguments": args, "result": result, "language": language,
                "volatility": volatility, "strict": strict, "leakproof": leakproof, "parallel": parallel,
                "security_definer": secdef, "returns_set": retset, "config": sorted(config),
                "cost": float(cost), "rows": float(rows), "owner": owner, "acl": acl, "source": source,
                "binary": binary,
            }
            for (signature, kind, args, result, language, volatility, strict, leakproof, parallel, secdef,
                 retset, config, cost, rows, owner, acl, source, binary) in cur.execute(_FUNCTIONS, params)
        }
        snap["types"] = {
            name: {"type": typtype, "owner": owner, "acl": acl, "enum_labels": labels, "domain": domain,
                   "range": rng}
            for name, typtype, owner, acl, labels, domain, rng in cur.execute(_TYPES, params)
        }
        snap["comments"] = {f"{typ} {identity}": text for typ, identity, text in cur.execute(_COMMENTS, params)}
        return _without_dated_partitions(snap)
    finally:
        cur.execute("SELECT set_config('search_path', %s, false)", (old_path,))
        cur.close()


def _without_dated_partitions(snap: dict[str, Any]) -> dict[str, Any]:
    snap["relations"] = {n: r for n, r in snap["relations"].items() if not DATED_PARTITION.match(n)}
    snap["indexes"] = {n: i for n, i in snap["indexes"].items() if not DATED_PARTITION.match(i["table"])}
    snap["constraints"] = {k: c for k, c in snap["constraints"].items()
                           if not DATED_PARTITION.match(k.rsplit(".", 1)[0])}
    snap["triggers"] = {k: t for k, t in snap["triggers"].items() if not DATED_PARTITION.match(k.rsplit(".", 1)[0])}
    snap["comments"] = {k: c for k, c in snap["comments"].items()
                        if not (k.startswith("table pgrelay.") and DATED_PARTITION.match(k.removeprefix("table pgrelay.")))}
    return snap


def snapshot_differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Where two snapshots differ: one "path: a != b" line per difference (empty when equal)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in sorted(set(a) | set(b), key=str):
            sub = f"{path}/{key}" if path else str(key)
            if key not in a:
                out.append(f"{sub}: only in the second")
            elif key not in b:
                out.append(f"{sub}: only in the first")
            else:
                out.extend(snapshot_differences(a[key], b[key], sub))
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        out = []
        for i, (x, y) in enumerate(zip(a, b)):
            out.extend(snapshot_differences(x, y, f"{path}[{i}]"))
        return out
    if a == b:
        return []
    if isinstance(a, str) and isinstance(b, str) and "\n" in a + b:  # a function's source: show a diff
        diff = difflib.unified_diff(a.splitlines(), b.splitlines(), "first", "second", lineterm="", n=1)
        return [f"{path}:\n    " + "\n    ".join(list(diff)[2:])]
    return [f"{path}: {a!r} != {b!r}"]
