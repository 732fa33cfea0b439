"""The handlers `make demo` runs: `jobs-worker <dsn> --app examples.demo_app:router`.

A handler takes one argument, ``ctx`` (the job: ``ctx.payload``, ``ctx.attempt``, ``ctx.logger``, ...).
Returning means success; raising means "retry later" (with backoff); raising ``pgrelay.Permanent``
means "never retry" (the job is dead-lettered at once).
"""

from __future__ import annotations

import pgrelay

router = pgrelay.Router()


@router.task("orders.created")
async def confirm_order(ctx: pgrelay.JobContext) -> None:
    """Enqueued by the orders table's trigger; payload {op, schema, table, old, new}."""
    order = ctx.payload["new"]
    # The update and this job's ack commit in one transaction: the order is confirmed exactly once.
    async with ctx.transaction() as conn:
        await conn.execute("UPDATE orders SET status = 'confirmed' WHERE id = $1", order["id"])
    ctx.logger.info("confirmed order %s for %s (%s)", order["id"], order["customer"], order["total"])


@router.task("email.flaky")
async def send_flaky_email(ctx: pgrelay.JobContext) -> dict:
    """A mail server that is busy twice: attempts 1 and 2 fail and are retried, attempt 3 succeeds."""
    if ctx.attempt < 3:
        raise ConnectionError(f"SMTP 451 mailbox busy, try later (attempt {ctx.attempt})")
    return {"sent_to": ctx.payload["to"], "attempt": ctx.attempt}   # stored as the job's result


@router.task("report.broken")
def build_broken_report(ctx: pgrelay.JobContext) -> None:
    """A plain (non-async) handler runs in a thread. Retrying cannot fix this one, so it says so."""
    raise pgrelay.Permanent(f"report template {ctx.payload['template']!r} does not exist")
