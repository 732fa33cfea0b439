"""Count the CPU instructions one claim-100-and-complete cycle costs pgrelay and pgmq, with callgrind.

    make bench-instructions                 # about 4 minutes; needs valgrind (apt-get install valgrind)
    make bench-instructions BENCH_ARGS='--only pgrelay'   # half that: to try a change to the SQL

Wall-clock figures on a shared 2-core VM move by 20% from one run to the next (bench/compare.py's
min-max columns show it), more than the differences a change to the SQL makes. Instructions do not:
the same statements on the same data execute the same instructions, give or take a few thousand.
So this counts them:

1. a throwaway cluster gets pgrelay (the real installer) and pgmq (its SQL from the PyPI package, as
   bench/peers.py installs it), both pre-filled with due jobs (100 per cycle of the long run, + 1,000);
   with ``--history N`` each system first completes N of them with the same cycle, to be measured as
   a queue in service (a history in the archive table, a hot table that has churned); then the
   cluster is vacuumed (not with ``--unvacuumed``: a drain's state before autovacuum comes by),
   checkpointed and stopped;
2. for each system and for two lengths (``--cycles``, default 1 and 500), a fresh copy of that data
   directory runs one single-user backend (``postgres --single``) under ``valgrind --tool=callgrind``
   with its cache simulation, reading the statements of bench/compare.py's pgbench scripts, two
   transactions per cycle, the ids (and pgrelay's attempts) passed on as text as pgbench's ``\gset``
   does (here through a session setting, the same way for both):
       pgrelay: SELECT ... array_to_string(array_agg(id), ','), ... attempt ... FROM pgrelay.consume(..., batch => 100)
                SELECT pgrelay.ack_many(string_to_array(<ids>, ',')::bigint[], string_to_array(<attempts>, ',')::int[])
       pgmq:    SELECT ... array_to_string(array_agg(msg_id), ',') FROM pgmq.read(q, 30, 100)
                SELECT count(*) FROM pgmq.archive(q, string_to_array(<ids>, ',')::bigint[])
3. per cycle = (count for the long run - count for the short one) / (difference in cycles): start-up
   and shut-down cancel out.

Instructions alone misjudge the CPU time: a cycle that touches more code and data misses the caches
more often. So it also reports L1 cache misses and KCachegrind's cycle estimate (instructions + 10 per
L1 miss + 100 per last-level miss), a rough model of a core, but the same for both systems and, like
the instructions, the same on every run.

It also reports the bytes of WAL a cycle writes (``pg_current_wal_insert_lsn()`` before the first cycle
and after the last, the same difference of two lengths): the I/O side, which every commit waits for.

This is the CPU side of the SQL-only "claim 100 + complete" figure (commits, fsync and the network are
not in it): use it to see whether a change to the SQL makes the hot path cheaper, and by how much.
The defaults count what one run of that figure does: bench/compare.py fills a fresh queue with
55,000 jobs and drains 50,000 of them (``--transactions 500``), so here a fresh queue of 51,000
drains 50,000, and cycles 2 to 500 are counted: early ones (a clean claim index) and late ones (one
that holds the entries of the jobs already taken) alike. The state matters, and not only to pgrelay: pgmq plans
every read afresh, and over a smaller queue its planner picks a sequential scan and a hash join. The
old default (20,000 jobs completed, then cycles 10 to 40 over a queue of 24,000) caught that plan:
pgmq took 13.5 M instructions a cycle there, 12.0 M here, and the counts put pgrelay 12% ahead where
a pgbench run found it behind.
``callgrind_annotate --inclusive=yes`` on the kept output files (``--keep DIR``) shows where.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.peers import pgmq_sql_path  # noqa: E402
from pgrelay.schema import migrate  # noqa: E402
from tests.harness.cluster import pg_bindir, throwaway_cluster  # noqa: E402

QUEUE = "bench"
BATCH = 100
HISTORY = 0
# one cycle: its statements, each its own transaction (bench/pgbench/consume_ack_100.sql and
# bench/peers.py's read_archive_100, with \gset's variables kept in session settings)
CYCLE = {
    "pgrelay": [
        "SELECT set_config('bench.ids', array_to_string(array_agg(id), ','), false) AS ids,"
        " set_config('bench.atts', array_to_string(array_agg(attempt), ','), false) AS atts"
        f" FROM pgrelay.consume('bench-worker', queues => '{{{QUEUE}}}', batch => {BATCH});",
        "SELECT pgrelay.ack_many(string_to_array(current_setting('bench.ids'), ',')::bigint[],"
        " string_to_array(current_setting('bench.atts'), ',')::int[]);",
    ],
    "pgmq": [
        "SELECT set_config('bench.ids', array_to_string(array_agg(msg_id), ','), false) AS ids"
        f" FROM pgmq.read('{QUEUE}', 30, {BATCH});",
        f"SELECT count(*) FROM pgmq.archive('{QUEUE}', string_to_array(current_setting('bench.ids'), ',')::bigint[]);",
    ],
}
# callgrind's events with --cache-sim=yes, in the order it prints them
EVENTS = ["Ir", "Dr", "Dw", "I1mr", "D1mr", "D1mw", "ILmr", "DLmr", "DLmw"]
# the WAL position, before the first cycle and after the last: the bytes of WAL the cycles wrote
WAL_POSITION = "SELECT pg_current_wal_insert_lsn() AS wal;"
WAL_ANSWER = re.compile(r'^\s*1: wal = "([0-9A-F]+)/([0-9A-F]+)"', re.MULTILINE)
# what each cycle must answer: the jobs completed (a run that completes fewer did not measure a cycle)
ANSWER = re.compile(r'^\s*1: (?:ack_many|count) = "(\d+)"', re.MULTILINE)


async def prepare(dsn: str, jobs: int, history: int, vacuum: bool = True) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        await conn.execute(pgmq_sql_path().read_text())
        await conn.execute("SELECT pgmq.create($1)", QUEUE)
        for start in range(0, jobs, 10_000):
            n = min(10_000, jobs - start)
            await conn.execute(
                """SELECT count(*) FROM pgrelay.enqueue_bulk(
                       (SELECT jsonb_agg(jsonb_build_object('task', 'bench.noop', 'queue', $1::text,
                                                            'payload', jsonb_build_object('n', i)))
                        FROM generate_series(1, $2::int) i))""", QUEUE, n)
        await conn.execute("SELECT count(*) FROM pgmq.send_batch($1, (SELECT array_agg(jsonb_build_object('n', i))"
                           " FROM generate_series(1, $2::int) i))", QUEUE, jobs)
        # a queue in service: both systems first complete `history` jobs the same way (so the archive
        # tables hold history and the hot tables have churned), then autovacuum's work is done, unless
        # the indexes are to keep the entries of those jobs, as a drain leaves them until it comes by
        for _ in range(history // BATCH):
            for cycle in CYCLE.values():
                for statement in cycle:
                    await conn.execute(statement)
        await conn.execute("VACUUM ANALYZE" if vacuum else "ANALYZE")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


def count_instructions(datadir: Path, system: str, cycles: int, workdir: Path) -> tuple[dict[str, int], int]:
    """callgrind's events (EVENTS) for a single-user backend running ``cycles`` cycles on a fresh copy
    of ``datadir``, and the bytes of WAL the cycles write."""
    run_dir = workdir / f"data-{system}-{cycles}"
    shutil.copytree(datadir, run_dir, symlinks=True)
    script = workdir / f"{system}-{cycles}.sql"
    script.write_text("\n".join([WAL_POSITION, *CYCLE[system] * cycles, WAL_POSITION]) + "\n")
    out_file = workdir / f"callgrind.{system}-{cycles}.out"
    command = ["valgrind", "--tool=callgrind", "--cache-sim=yes", f"--callgrind-out-file={out_file}",
               str(Path(pg_bindir()) / "postgres"), "--single", "-D", str(run_dir), "postgres"]
    if os.geteuid() == 0:  # postgres refuses root: run it as the cluster's owner, as tests/harness/pg_ctl does
        owner = os.environ.get("PGRELAY_PG_OS_USER", "postgres")
        shutil.chown(workdir, owner)
        subprocess.run(["chown", "-R", owner, str(run_dir)], check=True)
        command = ["runuser", "-u", owner, "--", *command]
    with script.open() as stdin:
        proc = subprocess.run(command, stdin=stdin, capture_output=True, text=True, timeout=1800)
    answers = [int(n) for n in ANSWER.findall(proc.stdout)]
    if proc.returncode != 0 or answers != [BATCH] * cycles:
        raise SystemExit(f"{system}, {cycles} cycles: expected {cycles} answers of {BATCH}, got {answers[:5]}..."
                         f" (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    collected = re.search(r"Collected :((?: \d+)+)", proc.stderr)
    if collected is None or len(collected.group(1).split()) != len(EVENTS):
        raise SystemExit(f"callgrind printed no totals of {' '.join(EVENTS)}:\n{proc.stderr[-2000:]}")
    shutil.rmtree(run_dir)
    positions = [int(high, 16) << 32 | int(low, 16) for high, low in WAL_ANSWER.findall(proc.stdout)]
    if len(positions) != 2:
        raise SystemExit(f"{system}, {cycles} cycles: expected the WAL position before and after, got {positions}")
    return dict(zip(EVENTS, map(int, collected.group(1).split()))), positions[1] - positions[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, nargs=2, default=(1, 500), metavar=("SHORT", "LONG"))
    parser.add_argument("--keep", type=Path, help="keep callgrind's output files in this directory")
    parser.add_argument("--only", choices=list(CYCLE), help="count one system (half the time: to try a change); both are still installed and filled, "
                             "so its count is the one a full run gives")
    parser.add_argument("--history", type=int, default=HISTORY,
                        help=f"jobs each system completes before the count (default {HISTORY:,}; 0: a fresh install)")
    parser.add_argument("--unvacuumed", action="store_true",
                        help="no VACUUM after the history: the indexes keep the entries of the jobs it completed, as a "
                             "drain leaves them until autovacuum comes by (with --history 100000: a long drain)")
    args = parser.parse_args()
    short, long = sorted(args.cycles)
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed: apt-get install valgrind")
    workdir = Path(tempfile.mkdtemp(prefix="pgrelay-instructions-"))
    try:
        with throwaway_cluster() as cluster:
            asyncio.run(prepare(cluster.dsn(), args.history + BATCH * long + 1000, args.history, not args.unvacuumed))
            cluster.executor.stop()
            cluster.executor.stop = lambda *args, **kwargs: None  # stopped: leaving the block has nothing to stop
            datadir = Path(cluster.executor.datadir)
            per_cycle, wal = {}, {}
            for system in [args.only] if args.only else CYCLE:
                counts = {n: count_instructions(datadir, system, n, workdir) for n in (short, long)}
                events = {e: (counts[long][0][e] - counts[short][0][e]) / (long - short) for e in EVENTS}
                l1_misses = events["I1mr"] + events["D1mr"] + events["D1mw"]
                events["estimate"] = events["Ir"] + 10 * l1_misses + 100 * (events["ILmr"] + events["DLmr"] + events["DLmw"])
                per_cycle[system] = events
                wal[system] = (counts[long][1] - counts[short][1]) / (long - short)
                print(f"{system:8} {events['Ir'] / 1e6:7.2f} M instructions per cycle "
                      f"({events['Ir'] / BATCH / 1000:5.1f} k per job); "
                      f"{l1_misses / 1000:5.0f} k L1 misses (instructions {events['I1mr'] / 1000:.0f} k, "
                      f"data {(events['D1mr'] + events['D1mw']) / 1000:.0f} k); "
                      f"estimated {events['estimate'] / 1e6:6.2f} M cycles; "
                      f"{wal[system] / 1000:5.1f} kB of WAL per cycle ({wal[system] / BATCH:4.0f} B per job)", flush=True)
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            for out in workdir.glob("callgrind.*.out"):
                shutil.copy(out, args.keep / out.name)
        if args.only:
            return 0
        instructions = per_cycle["pgrelay"]["Ir"] / per_cycle["pgmq"]["Ir"]
        estimate = per_cycle["pgrelay"]["estimate"] / per_cycle["pgmq"]["estimate"]
        print(f"\npgrelay does a cycle (claim {BATCH} + complete, CPU only) in {instructions:.2f}x pgmq's instructions"
              f" and an estimated {estimate:.2f}x its CPU cycles: at the same clock that is {1 / estimate:.2f}x pgmq's rate."
              f" It writes {wal['pgrelay'] / wal['pgmq']:.2f}x pgmq's WAL per cycle.")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
