"""Handlers for the end-to-end tests: each records every execution, so duplicates are counted."""

from __future__ import annotations

import asyncio
import os

import pgrelay

router = pgrelay.Router()


async def _record(ctx: pgrelay.JobContext, note: str = "ran") -> None:
    await ctx.pool.execute(
        "INSERT INTO executions (job_id, attempt, pid, note) VALUES ($1, $2, $3, $4)",
        ctx.job_id, ctx.attempt, os.getpid(), note,
    )


@router.task("record")
async def record(ctx: pgrelay.JobContext) -> dict:
    await _record(ctx)
    return {"pid": os.getpid()}


@router.task("sleepy")
async def sleepy(ctx: pgrelay.JobContext) -> None:
    await _record(ctx, "started")
    try:
        await asyncio.sleep(float(ctx.payload.get("seconds", 1)))
    except asyncio.CancelledError:
        await asyncio.shield(_record(ctx, "cancelled"))
        raise
    await _record(ctx, "finished")


@router.task("tx")
async def tx(ctx: pgrelay.JobContext) -> None:
    async with ctx.transaction() as conn:
        await conn.execute("INSERT INTO effects (job_id, attempt) VALUES ($1, $2)", ctx.job_id, ctx.attempt)
        await _record(ctx, "in transaction")
        await asyncio.sleep(float(ctx.payload.get("seconds", 0)))
