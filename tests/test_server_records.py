"""Job records on disk that JSON cannot carry as they are (written by an older server, hand-edited)
never break the listings: GET /jobs and GET /jobs/{id} answer 200, across restarts."""

from __future__ import annotations

import json
import math
import time

import pytest
from server_kit import LiveServer, config

from nfsd.jobs.store import JobRecord

IDS = {"surrogate": "a" * 32, "nan": "b" * 32, "broken": "c" * 32, "fine": "d" * 32}


def write_record(data_dir, rec: dict) -> None:
    folder = data_dir / "jobs" / rec["id"]
    folder.mkdir(parents=True)
    (folder / "settings.json").write_text(json.dumps(rec["settings"]))
    (folder / "status.json").write_text(json.dumps(rec))  # json.dumps escapes a lone surrogate as \\ud800


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    base = dict(JobRecord(id="", seq=0, created=time.time(), settings={}).to_dict(), state="failed", error="x")
    write_record(data, dict(base, id=IDS["surrogate"], seq=1, settings={"prompt": "a\ud800b"},
                            error="bad \udcff byte"))
    write_record(data, dict(base, id=IDS["nan"], seq=2, settings={"prompt": "ok"}, loss=math.nan,
                            steps_per_second=math.inf))
    write_record(data, dict(base, id=IDS["broken"], seq=3, settings=["not", "a dict"], state="weird", step="x"))
    write_record(data, dict(base, id=IDS["fine"], seq=4, settings={"prompt": "fine"}))
    with LiveServer(config(str(tiny_model), data)) as live:
        yield live


def test_get_jobs_lists_every_record(server):
    r = server.client.get("/jobs")
    assert r.status_code == 200, r.text
    jobs = {j["id"]: j for j in r.json()["jobs"]}
    assert set(IDS.values()) <= set(jobs)
    assert jobs[IDS["surrogate"]]["settings"]["prompt"] == "a\\ud800b"
    assert jobs[IDS["nan"]]["loss"] is None and jobs[IDS["nan"]]["steps_per_second"] is None
    assert jobs[IDS["fine"]]["settings"] == {"prompt": "fine"}


@pytest.mark.parametrize("which", list(IDS))
def test_get_one_job_answers(server, which):
    r = server.client.get(f"/jobs/{IDS[which]}")
    assert r.status_code == 200, r.text
    assert r.json()["id"] == IDS[which]
    r = server.client.get(f"/jobs/{IDS[which]}/result")
    assert r.status_code == 409 and "detail" in r.json()
    r = server.client.post(f"/jobs/{IDS[which]}/cancel")
    assert r.status_code == 200, r.text
