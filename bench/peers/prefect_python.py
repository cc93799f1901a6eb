"""Prefect's own Python client as a reader, for bench/e2e.lua.

    prefect_python.py URL N

Reads N task runs the way its users do: get_client(), read_task_runs pages of 200 in ID_DESC
order, paging by hand with offset. One page first (connection and code paths warm), then the N
runs timed. Prints "RESULT cpu=S wall=S runs=N peak_kb=K" (CPU of this process, peak RSS).
"""

import os
import resource
import sys
import time


def main():
    url, n = sys.argv[1], int(sys.argv[2])
    os.environ["PREFECT_API_URL"] = url
    os.environ["PREFECT_HOME"] = os.environ.get("PREFECT_HOME") or "/tmp/prefect-python-peer"
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import TaskRunSort

    def cpu():
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    with get_client(sync_client=True) as client:
        client.read_task_runs(sort=TaskRunSort.ID_DESC, limit=200, offset=0)
        got = 0
        cpu0, wall0 = cpu(), time.monotonic()
        while got < n:
            page = client.read_task_runs(sort=TaskRunSort.ID_DESC, limit=min(200, n - got), offset=got)
            if not page:
                break
            for run in page:
                if run.id is None:
                    raise SystemExit("run without id")
            got += len(page)
        used, wall = cpu() - cpu0, time.monotonic() - wall0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print("RESULT cpu=%f wall=%f runs=%d peak_kb=%d" % (used, wall, got, peak))


if __name__ == "__main__":
    main()
