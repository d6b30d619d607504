"""docs/MODELS.md: send every row of a CSV to a running daemon's /v1/predict
and its label back to /v1/feedback, as an application would (with the bearer
token in STEWARD_TOKEN, when set); print how many answers were right and which
versions answered.

    python3 scripts/walkthrough/traffic.py CSV [URL]
"""

import csv
import collections
import json
import os
import sys
import urllib.request

path = sys.argv[1]
url = sys.argv[2] if len(sys.argv) > 2 else "http://127.0.0.1:8080"


def post(route, body):
    req = urllib.request.Request(
        url + route,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    if os.environ.get("STEWARD_TOKEN"):
        req.add_header("authorization", "Bearer " + os.environ["STEWARD_TOKEN"])
    with urllib.request.urlopen(req) as r:
        return json.load(r)


right, versions = 0, collections.Counter()
with open(path, newline="") as f:
    rows = list(csv.DictReader(f))
for row in rows:
    label = row.pop("label")
    answer = post("/v1/predict", {"features": {k: float(v) for k, v in row.items()}})
    versions[answer["model_version"]] += 1
    right += answer["prediction"] == label
    post("/v1/feedback", {"id": answer["id"], "label": label})
print(f"{len(rows)} predictions, {right} right, answered by {dict(versions)}; {len(rows)} labels sent")
