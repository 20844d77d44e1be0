"""DELETE racing downloads of a finished job: every download is whole (200) or a 404 saying the job
was deleted, never a 500."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from server_kit import FAST, LiveServer, config, cube, submit, wait_for


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    with LiveServer(config(str(tiny_model), tmp_path_factory.mktemp("data"))) as live:
        yield live


def done_job(server) -> str:
    job = submit(server.client, cube(), FAST).json()["id"]
    assert wait_for(server.client, job)["state"] == "done"
    return job


class VanishingPath(type(Path())):
    """A result file that is there when checked and gone when opened: DELETE won the race."""

    def is_file(self):
        return True


def test_a_result_deleted_between_lookup_and_send_is_a_404(server, monkeypatch):
    job = done_job(server)
    manager = server.app.state.manager
    monkeypatch.setattr(manager, "result_path", lambda job_id: VanishingPath(f"/nonexistent/{job_id}/result.npz"))
    r = server.client.get(f"/jobs/{job}/result")
    assert r.status_code == 404, r.text
    assert "deleted" in r.json()["detail"]


def test_downloads_racing_a_delete_are_whole_or_404(server):
    for _ in range(2):
        job = done_job(server)
        expected = len(server.client.get(f"/jobs/{job}/result").content)
        statuses, lock = [], threading.Lock()

        def download():
            r = server.client.get(f"/jobs/{job}/result")
            with lock:
                statuses.append((r.status_code, len(r.content)))
                if r.status_code == 200:
                    np.load(__import__("io").BytesIO(r.content), allow_pickle=False)

        threads = [threading.Thread(target=download) for _ in range(12)]
        for i, t in enumerate(threads):
            t.start()
            if i == 6:
                assert server.client.delete(f"/jobs/{job}").status_code == 200
        for t in threads:
            t.join(30)
        assert statuses and all(code in (200, 404) for code, _ in statuses), statuses
        assert all(n == expected for code, n in statuses if code == 200)
