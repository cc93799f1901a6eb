"""Seeds a real Prefect server through its own REST API, then reads the data back.

    seed.py API_URL SHAPE_DATASET OUT_DATASET [--auth-string U:P] [--runs N]

SHAPE_DATASET is a recorded dataset (spec/fixtures/dataset-2.19.9.json): its flows,
flow runs and task runs are created again with the same names, tags, task keys,
flow-run membership and final state types; runs that never started stay without a
start time. Added to that shape, for what the 2.19.9 recording lacks: a deployment
with a flow run of its own, a subflow (a flow run whose parent task run is in the
data), task runs with labels, and expected start times spread over fourteen days
(every run starts SCHEDULED at its own time). The server stamps start and end
times itself from its clock, so those fall within the seeding's minute or two.

--runs N creates only the first N of the recorded task runs (the extras stay).

OUT_DATASET gets what the server returns afterwards, in the recorded datasets'
layout: {server_version, api_version, flows, flow_runs, task_runs, deployments}.
"""

import base64
import datetime
import http.client
import json
import sys
import urllib.parse

DAY = datetime.timedelta(days=1)


class Api:
    def __init__(self, url, auth_string=None):
        u = urllib.parse.urlsplit(url)
        self.base = u.path.rstrip("/")
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        self.headers = {"content-type": "application/json", "accept": "application/json"}
        if auth_string:
            token = base64.b64encode(auth_string.encode()).decode()
            self.headers["authorization"] = "Basic " + token

    def send(self, method, path, data):
        self.conn.request(method, self.base + path, body=data, headers=self.headers)
        r = self.conn.getresponse()
        return r, r.read()

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        r, text = self.send(method, path, data)
        if r.status == 403 and b"CSRF" in text:
            # A server with CSRF protection: take a token (they expire; take another when refused).
            client = "seed-py"
            t, token = self.send("GET", "/csrf-token?client=" + client, None)
            if t.status != 200:
                raise SystemExit("seed.py: GET /csrf-token -> %d %s" % (t.status, token[:500]))
            self.headers["prefect-csrf-token"] = json.loads(token)["token"]
            self.headers["prefect-csrf-client"] = client
            r, text = self.send(method, path, data)
        if r.status >= 300:
            raise SystemExit("seed.py: %s %s -> %d %s" % (method, path, r.status, text[:500]))
        return json.loads(text) if text else None

    def read_all(self, path, key=None):
        out, offset = [], 0
        while True:
            body = {"limit": 200, "offset": offset}
            if key:
                body["sort"] = key
            page = self.call("POST", path, body)
            out.extend(page)
            if len(page) < 200:
                return out
            offset += 200


def iso(t):
    return t.astimezone(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def drive(api, run_id, final):
    """Forces a run from its SCHEDULED first state through to `final`."""
    path = "/task_runs/%s/set_state" % run_id
    if final == "SCHEDULED":
        return
    api.call("POST", path, {"state": {"type": "PENDING"}, "force": True})
    if final == "PENDING":
        return
    api.call("POST", path, {"state": {"type": "RUNNING"}, "force": True})
    if final == "RUNNING":
        return
    message = "seeded " + final.lower()
    api.call("POST", path, {"state": {"type": final, "message": message}, "force": True})


def create_task_run(api, spec, flow_run_id, scheduled, labels=None):
    body = {
        "name": spec["name"],
        "task_key": spec["task_key"],
        "dynamic_key": spec["dynamic_key"],
        "tags": spec["tags"],
        "flow_run_id": flow_run_id,
        "state": {"type": "SCHEDULED", "state_details": {"scheduled_time": iso(scheduled)}},
    }
    if labels:
        body["labels"] = labels
    run = api.call("POST", "/task_runs/", body)
    drive(api, run["id"], spec["state_type"])
    return run["id"]


def main():
    args = sys.argv[1:]
    auth = None
    if "--auth-string" in args:
        i = args.index("--auth-string")
        auth = args[i + 1]
        del args[i:i + 2]
    runs_cap = None
    if "--runs" in args:
        i = args.index("--runs")
        runs_cap = int(args[i + 1])
        del args[i:i + 2]
    url, shape_path, out_path = args
    shape = json.load(open(shape_path))
    api = Api(url, auth)

    flows = {}
    for f in sorted(shape["flows"], key=lambda f: f["created"]):
        flows[f["id"]] = api.call("POST", "/flows/", {"name": f["name"], "tags": f["tags"]})["id"]

    flow_runs = {}
    for fr in sorted(shape["flow_runs"], key=lambda r: r["created"]):
        made = api.call("POST", "/flow_runs/", {
            "flow_id": flows[fr["flow_id"]], "name": fr["name"], "tags": fr["tags"],
            "state": {"type": "PENDING"}})
        api.call("POST", "/flow_runs/%s/set_state" % made["id"],
                 {"state": {"type": fr["state_type"]}, "force": True})
        flow_runs[fr["id"]] = made["id"]

    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    first = now - 14 * DAY
    runs = sorted(shape["task_runs"], key=lambda r: r["created"])[:runs_cap]
    step = 14 * DAY / len(runs)
    made_ids = []
    for i, spec in enumerate(runs):
        labels = {"team": "data" if i % 2 else "ml", "tier": i % 3} if i % 7 == 0 else None
        fr = flow_runs.get(spec["flow_run_id"]) if spec["flow_run_id"] else None
        made_ids.append(create_task_run(api, spec, fr, first + i * step, labels))

    # A deployment with a flow run of its own, and a subflow run launched from one of the
    # recorded task runs (the first that ran in a flow run), each with a few task runs.
    first_flow = flows[sorted(shape["flows"], key=lambda f: f["created"])[0]["id"]]
    deployment = api.call("POST", "/deployments/", {
        "name": "nightly-etl", "flow_id": first_flow, "tags": ["prod"],
        "work_queue_name": "default"})
    deployed = api.call("POST", "/flow_runs/", {
        "flow_id": first_flow, "name": "fr-deployed", "tags": ["prod"],
        "deployment_id": deployment["id"], "state": {"type": "PENDING"}})
    parent = next(made_ids[i] for i, r in enumerate(runs)
                  if r["flow_run_id"] and r["state_type"] == "COMPLETED")
    child = api.call("POST", "/flow_runs/", {
        "flow_id": first_flow, "name": "fr-child", "tags": ["sub"],
        "parent_task_run_id": parent, "state": {"type": "PENDING"}})
    extra = [("deploy-extract", deployed["id"], "COMPLETED"),
             ("deploy-load", deployed["id"], "FAILED"),
             ("deploy-report", deployed["id"], "RUNNING"),
             ("child-step", child["id"], "COMPLETED"),
             ("child-step", child["id"], "CRASHED")]
    for n, (name, fr, state) in enumerate(extra):
        spec = {"name": "%s-%d" % (name, n), "task_key": "tasks." + name, "dynamic_key": str(n),
                "tags": ["extra"], "state_type": state}
        create_task_run(api, spec, fr, now + n * DAY, {"origin": "seed", "n": n})
    for fr, state in ((deployed["id"], "FAILED"), (child["id"], "COMPLETED")):
        api.call("POST", "/flow_runs/%s/set_state" % fr, {"state": {"type": state}, "force": True})

    data = {
        "server_version": api.call("GET", "/admin/version"),
        "api_version": api.call("GET", "/version"),
        "flows": api.read_all("/flows/filter"),
        "flow_runs": api.read_all("/flow_runs/filter"),
        "task_runs": api.read_all("/task_runs/filter"),
        "deployments": api.read_all("/deployments/filter"),
    }
    with open(out_path, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    print("seed.py: %d flows, %d flow runs, %d task runs, %d deployments" % (
        len(data["flows"]), len(data["flow_runs"]), len(data["task_runs"]),
        len(data["deployments"])))


if __name__ == "__main__":
    main()
