# SPDX-License-Identifier: GPL-3.0-or-later
"""Texturing jobs: a worker thread per job talks to the backend, the main thread applies results.

Threading rule: a worker thread only does HTTP and numpy; it never touches bpy. It reports through
its job's queue; :func:`process_events` drains the queues on the main thread (called by a
``bpy.app.timers`` callback in Blender, directly by the tests, where timers never fire) and is the
only place where results reach ``bpy.data``.

The registry of running jobs (one per object name) is the add-on's only module state besides the
backend status line; objects are found again by name because undo invalidates Python references.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass

import numpy as np

from . import image_io, local_backend, mesh_io
from .client import BackendError, Client

ACTIVE_STATES = {"starting", "submitting", "queued", "loading", "running", "cancelling"}
FINAL_STATES = {"done", "failed", "cancelled"}


@dataclass
class Connection:
    """How to reach the backend; built from the add-on preferences on the main thread.

    ``start_command``: when set and the backend is unreachable, a job starts it with that command
    (see :func:`local_backend.build_command`). Intervals are in seconds.
    """

    url: str = "127.0.0.1:7870"
    token: str = ""
    online_access: bool = True
    start_command: str = ""
    poll_interval: float = 0.5
    preview_interval: float = 3.0

    def client(self, **kwargs) -> Client:
        return Client(self.url, self.token, online_access=self.online_access, **kwargs)


def format_duration(seconds: float | None) -> str:
    """``83`` -> ``"1:23"``, ``3725`` -> ``"1:02:05"``; ``"--:--"`` when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "--:--"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Job:
    """One object's texturing run. Fields are read and written on the main thread only; the
    worker thread talks to the main thread through ``events`` (kind, payload) tuples."""

    def __init__(self, object_name: str, settings: dict, mesh_npz: bytes, uv_map: str,
                 connection: Connection, init_texture: np.ndarray | None = None, base_key: str = "",
                 loops: np.ndarray | None = None):
        self.object_name = object_name
        self.settings = dict(settings)
        self.uv_map = uv_map  # the UV map whose UVs were sent; "" = the backend unwraps
        self.base_key = base_key  # the shape key whose positions were sent; "" = the basis
        self.loops = loops  # int32 [F, 3] loop of each sent triangle corner (mesh_io.loop_triangles)
        self.connection = connection
        self._mesh_npz = mesh_npz
        self._init_texture = init_texture  # uint8 [H, W, 4], row 0 = bottom (Continue)
        self.events: queue.Queue = queue.Queue()
        self._cancel = threading.Event()
        self.thread = threading.Thread(target=self._work, name=f"nfsd-job-{object_name}", daemon=True)

        self.job_id = ""
        self.state = "submitting"
        self.phase = "Uploading mesh"
        self.error = ""
        self.warnings: list[str] = []  # what the result's run noticed (shown under "Done")
        self.step = 0
        self.total = int(settings.get("steps") or 0)
        self.progress = 0.0
        self.loss: float | None = None
        self.eta: float | None = None
        self.elapsed: float | None = None
        self.queue_position = 0
        self.started = time.monotonic()
        self.finished_at: float | None = None
        self.previews = 0
        # Things this job created or replaced in the scene, by name (see module doc).
        self.image_name = ""
        self.material_name = ""
        self.previous_materials: list[str] | None = None
        # A mesh sent without UVs: the backend's unwrap, fetched while the job runs, becomes the
        # UV map "NFSD_UV" so the live preview can be shown on the mesh (the result reuses it).
        self.preview_uv_map = ""
        self._created_uv_map = False
        self._pending_uvs: np.ndarray | None = None
        self._pending_result: bytes | None = None

    # -- main thread ---------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def start(self) -> "Job":
        self.thread.start()
        return self

    def request_cancel(self) -> None:
        """Ask the worker to cancel the backend job; the state becomes "cancelled" once the
        backend confirmed (or at once if nothing was submitted yet)."""
        if self.active:
            self.state = "cancelling"
            self.phase = "Cancelling"
            self._cancel.set()

    def elapsed_seconds(self) -> float:
        """Seconds since the artist pressed the button (queue and model loading included)."""
        end = self.finished_at if self.finished_at is not None else time.monotonic()
        return end - self.started

    def status_text(self) -> str:
        """One line for the panel and the status bar."""
        elapsed = format_duration(self.elapsed_seconds())
        if self.state == "queued":
            position = f" (position {self.queue_position})" if self.queue_position else ""
            return f"Queued{position}, {elapsed} elapsed"
        if self.state == "loading":
            return f"Loading model {self.progress:.0%}, {elapsed} elapsed"
        if self.state == "running":
            loss = f" · loss {self.loss:.4g}" if self.loss is not None else ""
            return (f"Step {self.step}/{self.total} · {elapsed} elapsed · ETA {format_duration(self.eta)}{loss}")
        if self.state == "done":
            if self._pending_result is not None:
                return "Done: leave Edit Mode to apply"
            noted = f" · {len(self.warnings)} warning(s)" if self.warnings else ""
            return f"Done in {elapsed}{noted}"
        if self.state == "failed":
            return self.error
        if self.state == "cancelled":
            return f"Cancelled after {elapsed}"
        return f"{self.phase}..."

    def _handle(self, kind: str, payload) -> None:
        if kind == "phase":
            self.phase = payload
            if payload.startswith("Starting"):
                self.state = "starting" if self.state != "cancelling" else self.state
        elif kind == "submitted":
            self.job_id = payload
            if self.state != "cancelling":
                self.state = "queued"
        elif kind == "status":
            self._take_status(payload)
        elif kind == "preview":
            self._apply_preview(payload)
        elif kind == "uvs":
            self._pending_uvs = payload
            self._try_apply_uvs()
        elif kind == "result":
            self._pending_result = payload
            self.state = "done"
            self.progress = 1.0
            self.step = self.total
            self._finish()
            self._try_apply_result()
        elif kind == "error":
            self._fail(payload)
        elif kind == "cancelled":
            self.state = "cancelled"
            self._finish()
            self._discard_preview()

    def _take_status(self, status: dict) -> None:
        state = status.get("state", "")
        if state in ("queued", "loading", "running") and self.state != "cancelling":
            self.state = state
        self.queue_position = int(status.get("queue_position") or 0)
        self.step = int(status.get("step") or 0)
        self.total = int(status.get("total") or self.total)
        self.progress = float(status.get("progress") or (self.step / self.total if self.total else 0.0))
        self.loss = status.get("loss")
        self.eta = status.get("eta_seconds")
        self.elapsed = status.get("elapsed_seconds")

    def _finish(self) -> None:
        self.finished_at = time.monotonic()

    def _fail(self, message: str) -> None:
        self.state = "failed"
        self.error = message
        self._finish()
        self._discard_preview()

    def _object(self):
        import bpy

        return bpy.data.objects.get(self.object_name)

    def _apply_preview(self, png: bytes) -> None:
        obj = self._object()
        if obj is None or obj.type != "MESH" or self.state in FINAL_STATES:
            return
        try:
            pixels = image_io.decode_png(png)
        except ValueError:
            return  # a half-written snapshot; the next one will do
        import bpy

        image = bpy.data.images.get(self.image_name) if self.image_name else None
        if image is None:
            image = mesh_io.new_texture_image(image_name(obj, self.settings), pixels.shape[1], pixels.shape[0])
            self.image_name = image.name
        image_io.set_image_pixels(image, pixels)
        self.previews += 1
        self._show_preview(obj, image)

    def _show_preview(self, obj, image) -> None:
        """Put the preview material on ``obj`` once there is a UV map to lay ``image`` on: the one
        sent, or for a mesh sent without UVs the backend's unwrap (until it arrives, the image
        updates in the Image Editor only)."""
        import bpy

        uv_map = self.uv_map or self.preview_uv_map
        if uv_map and obj.mode != "EDIT" and bpy.data.materials.get(self.material_name) is None:
            material = mesh_io.texture_material(material_name(self.settings), image, uv_map)
            self.material_name = material.name
            self.previous_materials = mesh_io.assign_material(obj, material)

    def _try_apply_uvs(self) -> None:
        """Store the backend's UVs (``_pending_uvs``) as UV map "NFSD_UV", then show the preview."""
        if self._pending_uvs is None:
            return
        obj = self._object()
        if obj is None or obj.type != "MESH" or not self.active or self.state == "cancelling":
            self._pending_uvs = None
            return
        if obj.mode == "EDIT":
            return  # Edit Mode would overwrite the layer on exit: a later process_events call applies it
        import bpy

        uvs, self._pending_uvs = self._pending_uvs, None
        existed = mesh_io.GENERATED_UV_NAME in obj.data.uv_layers
        try:
            layer = mesh_io.write_uv_map(obj, mesh_io.GENERATED_UV_NAME, uvs, self.loops)
        except ValueError:
            return  # the mesh was edited since it was sent: no preview on it; the result says why
        self.preview_uv_map = layer.name
        self._created_uv_map = not existed
        image = bpy.data.images.get(self.image_name) if self.image_name else None
        if image is not None:
            self._show_preview(obj, image)

    def _try_apply_result(self) -> None:
        obj = self._object()
        if self._pending_result is None:
            return
        if obj is None:
            self._fail(f"The object '{self.object_name}' is gone (renamed or deleted), so the result "
                       "cannot be applied.")
            return
        if obj.mode == "EDIT":
            return  # applied by a later process_events call, once Edit Mode is left
        import bpy

        data, self._pending_result = self._pending_result, None
        try:
            run = apply_result(obj, data, self.settings, uv_map=self.uv_map, base_key=self.base_key,
                               loops=self.loops, job_id=self.job_id,
                               image=bpy.data.images.get(self.image_name) if self.image_name else None,
                               material=bpy.data.materials.get(self.material_name) if self.material_name else None)
        except ValueError as error:
            self._fail(f"The result could not be applied: {error}")
            return
        self.warnings = run.warnings.splitlines()
        push_undo(f"NFSD texture '{obj.name}'")

    def _discard_preview(self) -> None:
        """Put the object's materials back and drop the preview image/material of a run that
        did not finish."""
        import bpy

        obj = self._object()
        material = bpy.data.materials.get(self.material_name) if self.material_name else None
        if obj is not None and self.previous_materials is not None:
            mesh_io.restore_materials(obj, self.previous_materials)
        if obj is not None and self._created_uv_map and obj.mode != "EDIT":
            layer = obj.data.uv_layers.get(self.preview_uv_map)
            if layer is not None:
                obj.data.uv_layers.remove(layer)
        self._created_uv_map, self.preview_uv_map, self._pending_uvs = False, "", None
        if material is not None and material.users == 0:
            bpy.data.materials.remove(material)
        image = bpy.data.images.get(self.image_name) if self.image_name else None
        if image is not None and image.users == 0:
            bpy.data.images.remove(image)
        self.previous_materials = None

    # -- worker thread -------------------------------------------------------------------------
    def _post(self, kind: str, payload=None) -> None:
        self.events.put((kind, payload))

    def _work(self) -> None:
        try:
            client = self.connection.client()
            init_png = image_io.encode_png(self._init_texture) if self._init_texture is not None else None
            job_id = self._submit(client, init_png)
            self._mesh_npz = b""
            self._post("submitted", job_id)
            self._poll(client, job_id)
        except BackendError as error:
            self._post("cancelled" if self._cancel.is_set() else "error", str(error))
        except Exception as error:  # a bug must still end the job with a message, not a silent thread
            self._post("error", f"Unexpected error in the NFSD add-on: {error!r}")

    def _submit(self, client: Client, init_png: bytes | None) -> str:
        try:
            return client.submit(self._mesh_npz, self.settings, init_png)
        except BackendError as error:
            if error.kind != "unreachable" or not self.connection.start_command:
                raise
        self._post("phase", "Starting the local backend")
        local_backend.start(self.connection.start_command, client.url)
        local_backend.wait_until_up(client.url, client.token, timeout=180.0, cancel=self._cancel)
        self._post("phase", "Uploading mesh")
        return client.submit(self._mesh_npz, self.settings, init_png)

    def _poll(self, client: Client, job_id: str) -> None:
        last_preview = time.monotonic()
        last_snapshot = None
        failures = 0
        want_uvs = not self.uv_map  # set before the thread started, never changed: safe to read here
        while True:
            if self._cancel.is_set():
                try:
                    client.cancel(job_id)
                except BackendError as error:
                    if error.kind == "unreachable":
                        raise
                    # 409 and the like: the job ended on its own meanwhile; cancelled is still true here.
                self._post("cancelled")
                return
            try:
                status = client.status(job_id)
                failures = 0
            except BackendError as error:
                failures += 1  # a busy or restarting backend may miss a poll or two
                if error.kind != "unreachable" or failures >= 10:
                    raise
                self._cancel.wait(1.0)
                continue
            self._post("status", status)
            state = status.get("state")
            if state == "done":
                self._post("result", client.result(job_id))
                return
            if state == "failed":
                self._post("error", status.get("error") or "The backend reported the job as failed.")
                return
            if state == "cancelled":
                self._post("cancelled")
                return
            if state == "interrupted":
                hint = status.get("resubmit_hint") or "press Texture Selected again"
                self._post("error", f"The backend stopped while the job ran: {hint}")
                return
            if want_uvs and state in ("loading", "running"):
                want_uvs = self._fetch_uvs(client, job_id, status)
            now = time.monotonic()
            # The backend says which step its snapshot is from: fetch each new one at most once.
            snapshot = status.get("preview_step", status.get("step"))
            if (state == "running" and snapshot != last_snapshot and snapshot is not None
                    and now - last_preview >= self.connection.preview_interval):
                png = client.preview_png(job_id)
                last_preview = now
                if png:
                    last_snapshot = snapshot
                    self._post("preview", png)
            self._cancel.wait(self.connection.poll_interval)

    def _fetch_uvs(self, client: Client, job_id: str, status: dict) -> bool:
        """Fetch the backend's unwrap once it is known and post it; returns whether to try again."""
        # A backend that does not report has_uvs predates GET /jobs/{id}/uvs: one try once running.
        if not status.get("has_uvs", status.get("state") == "running"):
            return True
        try:
            data = client.uvs(job_id)
        except BackendError as error:
            return error.kind == "unreachable"  # a missed poll; anything else: the result brings them
        if data is None:  # 404 although announced (or an older backend): the result brings them
            return False
        try:
            uvs, _generated = mesh_io.read_uvs(data)
        except ValueError:
            return False
        self._post("uvs", uvs)
        return False


# -- naming -------------------------------------------------------------------------------------
def material_name(settings: dict) -> str:
    return mesh_io.MATERIAL_PREFIX + settings.get("prompt", "")


def image_name(obj, settings: dict) -> str:
    return f"NFSD {obj.name}: {settings.get('prompt', '')}"


# -- main-thread operations ---------------------------------------------------------------------
_jobs: dict[str, Job] = {}


def job_for(object_name: str) -> Job | None:
    """The latest job of an object (running or finished), or None."""
    return _jobs.get(object_name)


def all_jobs() -> list[Job]:
    return list(_jobs.values())


def start_job(obj, settings: dict, connection: Connection, *, continue_from=None, unwrap: bool = False) -> Job:
    """Send ``obj`` to the backend with API ``settings``; returns the started Job.

    ``continue_from``: an item of ``obj.nfsd_runs`` whose texture (and UV map) the new run starts
    from; a run that refined the shape sends its shape key's positions, so the texture goes on
    growing on the shape it was made for (and new offsets add to the old ones). ``unwrap``: a mesh
    without UVs gets a "NFSD_UV" map from Blender's Smart UV Project before it is sent (seams along
    its polygons); otherwise the backend unwraps it. Raises ValueError (a sentence for the artist)
    when the object cannot be sent.
    """
    problem = mesh_io.mesh_problem(obj)
    if problem:
        raise ValueError(problem)
    running = _jobs.get(obj.name)
    if running is not None and running.active:
        raise ValueError(f"'{obj.name}' is already being textured; cancel that job first")
    if not str(settings.get("prompt", "")).strip():
        raise ValueError("Type a prompt first")
    init_texture = None
    base_key = ""
    uv_map = mesh_io.active_uv_name(obj)
    if continue_from is not None:
        if continue_from.image is None:
            raise ValueError("That run's image is gone; texture from scratch instead")
        uv_map = continue_from.uv_map
        if uv_map not in obj.data.uv_layers:
            raise ValueError(f"'{obj.name}' lost the UV map '{uv_map}' the texture was made for")
        base_key = continue_from.shape_key
        pixels = image_io.image_pixels(continue_from.image)
        init_texture = (np.clip(pixels[..., :4], 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        # The new texture keeps the old one's size: that is what the backend starts from.
        settings = dict(settings, texture_size=int(pixels.shape[1]))
    elif not uv_map and unwrap:
        uv_map = mesh_io.smart_unwrap(obj)
    wire = mesh_io.mesh_to_wire(obj, uv_map, base_key)  # ValueError when the artist deleted that key
    if base_key:
        mesh_io.show_offsets_key(obj, base_key)  # the live preview goes on the shape that was sent
    loops = mesh_io.loop_triangles(obj.data)[1]
    job = Job(obj.name, settings, wire, uv_map, connection, init_texture, base_key, loops)
    _jobs[obj.name] = job
    return job.start()


def process_events(max_events: int = 50) -> bool:
    """Apply what the workers reported (main thread). Returns True if anything changed."""
    changed = False
    for job in list(_jobs.values()):
        for _ in range(max_events):
            try:
                kind, payload = job.events.get_nowait()
            except queue.Empty:
                break
            job._handle(kind, payload)
            changed = True
        if job._pending_uvs is not None:
            job._try_apply_uvs()
        if job._pending_result is not None:
            job._try_apply_result()
    if _backend.take_changed():
        changed = True
    return changed


def cancel(object_name: str) -> bool:
    """Request cancellation of an object's running job; True if there was one."""
    job = _jobs.get(object_name)
    if job is None or not job.active:
        return False
    job.request_cancel()
    return True


def wait(job: Job, timeout: float = 60.0) -> Job:
    """Process events until ``job`` finished (tests and scripts; blocks the calling thread)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process_events()
        if not job.active and job._pending_result is None and job.events.empty():
            return job
        time.sleep(0.05)
    raise TimeoutError(f"job for '{job.object_name}' still {job.state} after {timeout} s")


def shutdown() -> None:
    """Cancel running jobs and forget all (the add-on is being disabled)."""
    for job in _jobs.values():
        job.request_cancel()
    _jobs.clear()


def push_undo(message: str) -> None:
    """Make what was just applied one undo step; quietly skipped where there is no undo stack
    (background mode, no window)."""
    import bpy

    try:
        if bpy.ops.ed.undo_push.poll():
            bpy.ops.ed.undo_push(message=message)
    except RuntimeError:
        pass


def apply_result(obj, data: bytes, settings: dict, *, uv_map: str = "", base_key: str = "",
                 loops: np.ndarray | None = None, job_id: str = "", image=None, material=None):
    """Put a result .npz on ``obj``: image (packed), material "NFSD: <prompt>", UV map "NFSD_UV"
    when the backend unwrapped, shape key "NFSD offsets" when offsets came back, and a new entry in
    ``obj.nfsd_runs`` (returned). ``uv_map`` is the UV map whose UVs were sent ("" = none);
    ``base_key`` the shape key whose positions were sent ("" = the basis): the result's offsets
    add to it, and a result without offsets belongs to that shape. ``loops``: the loop of each
    sent triangle corner (:func:`mesh_io.loop_triangles` at send time; default: the current ones).
    ``image``/``material``: the live preview's, reused so the viewport does not flicker.
    Raises ValueError, with nothing changed, when the result does not fit the mesh."""
    result = mesh_io.read_result(data)
    mesh = obj.data
    base_offsets = mesh_io.shape_key_offsets(obj, base_key) if base_key else None  # ValueError if gone
    mesh.calc_loop_triangles()
    if result.uvs.shape != (len(mesh.loop_triangles), 3, 2):
        raise ValueError(f"the result has UVs for {result.uvs.shape[0]} triangles but '{obj.name}' has "
                         f"{len(mesh.loop_triangles)}; was the mesh edited while the job ran?")
    if result.offsets is not None and result.offsets.shape != (len(mesh.vertices), 3):
        raise ValueError(f"the result has offsets for {result.offsets.shape[0]} vertices but '{obj.name}' "
                         f"has {len(mesh.vertices)}; was the mesh edited while the job ran?")

    warnings = result_warnings(result.meta)
    if result.uvs_generated or not uv_map:
        uv_map = mesh_io.write_uv_map(obj, mesh_io.GENERATED_UV_NAME, result.uvs, loops).name
        cut = mesh_io.polygons_cut(obj, result.uvs, loops)
        if cut:
            warnings.append(f"The backend's unwrap cut {cut} polygon(s) along a diagonal; Blender keeps one UV "
                            "per corner, so the texture shows a seam there. Turn on 'Unwrap in Blender' or "
                            "give the mesh a UV map, and run again.")
    height, width = result.texture.shape[:2]
    if image is None:
        image = mesh_io.new_texture_image(image_name(obj, settings), width, height)
    image_io.set_image_pixels(image, result.texture)
    image.pack()
    if material is None:
        material = mesh_io.texture_material(material_name(settings), image, uv_map)
    else:
        mesh_io.set_uv_map_of_material(material, uv_map)
    mesh_io.assign_material(obj, material)
    shape_key = base_key
    if result.offsets is not None:  # each run keeps its own key, so an earlier run can be re-applied
        offsets = result.offsets if base_offsets is None else base_offsets + result.offsets
        shape_key = mesh_io.write_offsets(obj, offsets, mesh_io.new_offsets_key_name(obj)).name
    else:
        mesh_io.show_offsets_key(obj, shape_key)  # the shape this run's texture was made on

    run = obj.nfsd_runs.add()
    run.prompt = settings.get("prompt", "")
    run.mode = str(settings.get("mode", "nfsd"))
    run.seed = int(settings.get("seed", 0))
    run.steps = int(settings.get("steps", 0) or 0)
    run.job_id = job_id
    run.image = image
    run.material = material
    run.uv_map = uv_map
    run.shape_key = shape_key
    run.created = time.strftime("%Y-%m-%d %H:%M")
    run.warnings = "\n".join(warnings)
    obj.nfsd_run_index = len(obj.nfsd_runs) - 1
    return run


def result_warnings(meta: dict) -> list[str]:
    """The mesh warnings the backend put in a result's ``meta`` (non-manifold edges, duplicate
    vertices, ...), each prefixed "Mesh: "; [] when there are none or ``meta`` is malformed."""
    mesh = meta.get("mesh") if isinstance(meta, dict) else None
    found = mesh.get("warnings") if isinstance(mesh, dict) else None
    if not isinstance(found, list):
        return []
    return [f"Mesh: {text}" for text in found if isinstance(text, str) and text.strip()]


def apply_run(obj, index: int) -> None:
    """Re-apply an earlier run of ``obj``: its material (texture and UV map) goes back on the mesh,
    and its offsets shape key is the only NFSD key at 1 (all at 0 for a run without offsets)."""
    if not 0 <= index < len(obj.nfsd_runs):
        raise ValueError(f"'{obj.name}' has no NFSD run number {index + 1}")
    run = obj.nfsd_runs[index]
    if run.material is None:
        raise ValueError("That run's material was deleted")
    if run.uv_map and run.uv_map not in obj.data.uv_layers:
        raise ValueError(f"'{obj.name}' lost the UV map '{run.uv_map}' of that run")
    keys = obj.data.shape_keys.key_blocks if obj.data.shape_keys else {}
    if run.shape_key and run.shape_key not in keys:
        raise ValueError(f"'{obj.name}' lost the shape key '{run.shape_key}' with that run's offsets")
    mesh_io.assign_material(obj, run.material)
    mesh_io.show_offsets_key(obj, run.shape_key)
    if run.uv_map:
        obj.data.uv_layers.active = obj.data.uv_layers[run.uv_map]
    obj.nfsd_run_index = index


# -- backend status line ------------------------------------------------------------------------
def describe_health(health: dict) -> str:
    """``GET /health`` as one line: model, device and GPU memory, queue."""
    parts = []
    loaded, loading = health.get("model_loaded"), health.get("model_loading")
    default = health.get("default_model") or health.get("model")
    if loading:
        parts.append(f"loading model {_short(loading)}")
    elif isinstance(loaded, str) and loaded:
        parts.append(f"model {_short(loaded)} loaded")
    elif default:
        parts.append(f"model {_short(default)} (loads with the first job)")
    gpu = health.get("gpu_name")
    if gpu:
        free = health.get("gpu_free_bytes")
        parts.append(f"{gpu}" + (f", {free / 2 ** 30:.1f} GB free" if isinstance(free, (int, float)) else ""))
    else:
        parts.append(f"{health.get('device') or 'cpu'}, no GPU: slow")
    queued = health.get("queue_length")
    if queued:
        parts.append(f"{queued} queued")
    version = health.get("version")
    return "Connected" + (f" (v{version})" if version else "") + ": " + ", ".join(parts)


def _short(model: str) -> str:
    # Local model paths are long; the folder or file name is what an artist recognizes.
    return model.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1] or model


class _BackendStatus:
    """The last health check, written by a checker thread, read by the panel (under a lock)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.ok: bool | None = None  # None: never checked
        self.text = "Not checked yet"
        self.checked_at = -1e9
        self.wanted_at = -1e9
        self._changed = False
        self._thread: threading.Thread | None = None

    def set(self, ok: bool, text: str) -> None:
        with self._lock:
            self.ok, self.text, self.checked_at, self._changed = ok, text, time.monotonic(), True

    def take_changed(self) -> bool:
        with self._lock:
            changed, self._changed = self._changed, False
        return changed

    def checking(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


_backend = _BackendStatus()


def backend_status() -> tuple[bool | None, str]:
    """``(ok, text)`` of the last check; ok None when never checked."""
    return _backend.ok, _backend.text


def check_backend(connection: Connection) -> tuple[bool, str]:
    """Ask the backend for its health now (blocks up to a few seconds: worker threads and tests)."""
    try:
        text = describe_health(connection.client(timeout=3.0).health())
        _backend.set(True, text)
    except BackendError as error:
        _backend.set(False, str(error))
    return _backend.ok, _backend.text


def refresh_backend_status(connection: Connection) -> None:
    """Start a health check in the background unless one is running."""
    if _backend.checking():
        return
    _backend._thread = threading.Thread(target=check_backend, args=(connection,), daemon=True,
                                        name="nfsd-health")
    _backend._thread.start()


def backend_checked_at() -> float:
    return _backend.checked_at


def note_status_wanted() -> None:
    """Called when the backend line is drawn: keeps it refreshed while someone looks at it."""
    _backend.wanted_at = time.monotonic()


def status_wanted_recently(seconds: float = 60.0) -> bool:
    return time.monotonic() - _backend.wanted_at < seconds


def unload_model(connection: Connection) -> str:
    """Ask the backend to free its model (GPU memory); returns a message. Raises BackendError."""
    connection.client(timeout=10.0).unload_model()
    return "The backend unloaded its model and freed the GPU memory"


def status_line() -> str:
    """The status bar's text: the running jobs, else the latest job's outcome for a minute."""
    active = [job for job in _jobs.values() if job.active]
    if active:
        job = active[0]
        more = f" (+{len(active) - 1} more)" if len(active) > 1 else ""
        return f"NFSD {job.object_name}: {job.status_text()}{more}"
    finished = [job for job in _jobs.values() if job.finished_at is not None]
    if finished:
        job = max(finished, key=lambda j: j.finished_at)
        if time.monotonic() - job.finished_at < 60.0:
            return f"NFSD {job.object_name}: {job.status_text()}"
    return ""
