"""Peer for bench/network.lua and bench/e2e.lua: Prefect's own Python client reading task runs
by offset.

    build/prefect-venv/bin/python bench/peers/prefect_client.py URL N [CAFILE]

Reads one page (imports, connection), then N runs with PrefectClient.read_task_runs in pages of
200 by offset, sorted by id. Prints "RESULT cpu=... wall=... runs=... peak_kb=..." (process CPU
time and wall time of the N runs; the process's peak RSS) as the benches' Lua children do.
"""

import asyncio
import os
import resource
import sys
import tempfile
import time

PAGE = 200


async def read(client, count, sort):
    got, offset, last = 0, 0, None
    while got < count:
        limit = min(PAGE, count - got)
        runs = await client.read_task_runs(sort=sort, limit=limit, offset=offset)
        for run in runs:
            last = run.id
        got += len(runs)
        offset += len(runs)
        if len(runs) < limit:
            break
    return got, last


async def main(url, count, cafile):
    os.environ["PREFECT_API_URL"] = url
    if cafile:
        os.environ["PREFECT_API_SSL_CERT_FILE"] = cafile
    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="prefect-bench-home-"))
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import TaskRunSort

    async with get_client() as client:
        await read(client, PAGE, TaskRunSort.ID_DESC)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        got, last = await read(client, count, TaskRunSort.ID_DESC)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    if got != count or last is None:
        sys.exit("read %d of %d runs" % (got, count))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print("RESULT cpu=%.6f wall=%.6f runs=%d peak_kb=%d" % (cpu, wall, got, peak))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None))
