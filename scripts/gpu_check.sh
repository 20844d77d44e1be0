#!/usr/bin/env bash
# The CUDA path end to end, in ONE device call of at most 10 minutes (issue 14).
#
#   scripts/gpu_check.sh prepare   here, with PyPI: the wheels the device image lacks (built for its
#                                  Python 3.12) and the diffrp-nvdiffrast source into .whl/ (ignored)
#   scripts/gpu_check.sh dry-run   here, CPU: installs .whl/ with Python 3.12 into a scratch folder the
#                                  way the device does, then every check below at tiny sizes on the CPU
#                                  (run it inside the project's venv: its `python` runs the checks; PY312
#                                  names a Python 3.12 if `python3.12` is not on PATH, e.g. with pyenv
#                                  PYENV_VERSION="3.11.7:3.12.1"). Last dry run (2026-12-08, after the executors, batch and pbr): all checks ok in 141 s on a loaded 2-core machine
#                                  but the nvdiffrast build (no CUDA here, as expected).
#   scripts/gpu_check.sh           on the GPU machine: install, then the checks; all output goes to
#                                  $OUT/gpu_check.log (and stdout), plus the texture job's report.json
#                                  and views.png as $OUT/out_report.json, $OUT/out_views.png (out_tiny_*: --encoder tiny)
#
# The device call (a session whose task has a GPU; `prepare` run first in the checkout that calls):
#
#   run(command="bash scripts/gpu_check.sh", carry=[".whl"], timeout_s=600)
#
# then give_back at once. The script keeps to GPU_CHECK_BUDGET seconds (default 540) so its log comes
# back before the call's limit: each check gets a timeout cut to what is left, and the optional ones
# are skipped, saying so, when too little is left. The checks, most important first:
#
#   1. nvdiffrast: JIT-builds its CUDA plugin (TORCH_CUDA_ARCH_LIST=9.0; if that fails, nvdiffrast is
#      removed so the later checks run at once on the PyTorch rasterizer), then `nfsd bench renderer`
#      (nvdiffrast against the PyTorch reference at 512, textures 1024 and 768: coverage, interior
#      colours within 1e-3, position-gradient cosine >= 0.99; a PASS/FAIL line per filter mode).
#   2. `nfsd bench speed --arch sd15 --render-size 512 --batch 1,4 --texture-size 1024,2048` (the
#      naive baseline runs in the same process; its table has the speed-up).
#   3. One default `nfsd texture` job (400 steps, batch 1, render 512, texture 1024) with a
#      random-weight SD-1.5-shaped model saved to local disk and a mesh without UVs (xatlas unwraps):
#      wall time of the whole command, report.json's timings and peak_gpu_memory_gb.
#   4. `nfsd serve` on the GPU: a job through HTTP cancelled halfway, then a second one completed.
#   5. torch.profiler over a few engine steps at SD-1.5 shapes: the ops that dominate a step.
#   6. The default job again with `--encoder tiny` (a random TAESD-shaped vae_tiny/ in the model),
#      then with `--material pbr` (GGX shading of base colour, roughness and metallic on this rasterizer).
#   7. `nfsd bench speed ... --compile`.
#   8. SDXL shapes at 1024 and 512 (`nfsd bench speed --arch sdxl`; also `--encoder tiny` once bench
#      speed has that option; each skipped, saying so, while bench speed lacks it).
#
# The device image (see the device README's KINDS.md) has Python 3.12, torch 2.11 (cu130), nvcc 13,
# ninja, numpy, pillow, anyio, h11, click, httpx... (IMAGE_HAS below) but not diffusers, trimesh,
# xatlas, fastapi, pydantic, uvicorn; `prepare` checks that every requirement of a carried wheel is
# either carried or in IMAGE_HAS.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

# The versions CI tests with. diffusers 0.42 needs huggingface-hub >= 1.32 and safetensors >= 0.8, so the
# Hugging Face stack travels as one consistent set rather than trusting the image's versions.
WHEELS=(
    diffusers==0.42.1 transformers==5.24.0 huggingface_hub==2.4.0 tokenizers==0.23.3 safetensors==0.8.0
    accelerate==1.15.0 importlib_metadata==10.2.0 zipp==4.1.2 lazy-importer==0.1.0
    trimesh==5.2.0 xatlas==0.0.11
    fastapi==0.165.0 starlette==1.10.0 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0
    typing-inspection==0.4.5 typing_extensions==4.16.0 uvicorn==0.54.0 python-multipart==0.0.34
    opentelemetry-api==1.45.2 httpx2==2.16.2 httpcore2==2.16.2 truststore==0.10.5
)
NVDIFFRAST_SDIST=diffrp-nvdiffrast==0.3.3.1
# What the device image provides that the carried wheels (and the project) need.
IMAGE_HAS="torch numpy pillow tqdm filelock fsspec hf-xet requests regex pyyaml packaging psutil anyio h11 click
httpx idna sniffio annotated-doc typer shellingham rich setuptools wheel"
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_24_x86_64
           --platform manylinux_2_34_x86_64 --platform manylinux_2_35_x86_64)

# ------------------------------------------------------------------------------------------------
# prepare (here)
# ------------------------------------------------------------------------------------------------

prepare() {
    local py=${PYTHON:-python3}
    rm -rf .whl && mkdir -p .whl
    "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${PLATFORMS[@]}" -d .whl "${WHEELS[@]}" || return 1
    "$py" -m pip download -q --no-deps --no-binary :all: -d .whl "$NVDIFFRAST_SDIST" || return 1
    "$py" - "$IMAGE_HAS" <<'EOF' || return 1
import re, sys, zipfile, pathlib
from packaging.markers import Marker
DEVICE_ENV = {"python_version": "3.12", "python_full_version": "3.12.0", "platform_machine": "x86_64",
              "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix", "implementation_name": "cpython",
              "platform_python_implementation": "CPython"}
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
image = {norm(n) for n in sys.argv[1].split()}
wheels = sorted(pathlib.Path(".whl").glob("*.whl"))
carried = {norm(w.name.split("-")[0]) for w in wheels} | {"diffrp-nvdiffrast"}
missing = []
for w in wheels:
    meta = next(n for n in zipfile.ZipFile(w).namelist() if n.endswith(".dist-info/METADATA"))
    for line in zipfile.ZipFile(w).read(meta).decode().splitlines():
        if line.startswith("Requires-Dist:") and "extra ==" not in line:
            req = line.split(":", 1)[1].strip()
            if ";" in req and not Marker(req.split(";", 1)[1]).evaluate(DEVICE_ENV):
                continue
            name = norm(re.split(r"[ ;<>=!~\[(]", req)[0])
            if name not in carried and name not in image:
                missing.append(f"{w.name} needs {name}")
total = sum(p.stat().st_size for p in pathlib.Path(".whl").iterdir())
print(f"{len(wheels)} wheels + nvdiffrast source in .whl/: {total / 2**20:.1f} MiB (carry limit 64 MiB with the tree)")
if missing:
    print("not carried and not in the image:\n  " + "\n  ".join(missing)); sys.exit(1)
print("every requirement is carried or in the device image")
EOF
    git check-ignore -q .whl/x || echo "warning: .whl/ is not ignored by git (add /.whl/ to .gitignore)"
}

# ------------------------------------------------------------------------------------------------
# install (device; dry-run with Python 3.12 here)
# ------------------------------------------------------------------------------------------------

install() {  # $1 python, $2 target folder
    local py=$1 site=$2
    ls .whl/*.whl >/dev/null 2>&1 || { echo "no .whl/: run 'scripts/gpu_check.sh prepare' first and carry .whl"; return 1; }
    # One pip call: the carried wheels, nvdiffrast's source (pure Python at install, the CUDA plugin
    # compiles on first use) and the project from this tree; nothing from the network.
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --no-build-isolation --upgrade \
        --target "$site" .whl/*.whl .whl/diffrp_nvdiffrast-*.tar.gz . || return 1
    PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" "$py" -c "
import importlib, sys
for name in ('diffusers', 'trimesh', 'xatlas', 'fastapi', 'pydantic', 'uvicorn', 'multipart', 'nvdiffrast', 'nfsd'):
    m = importlib.import_module(name)
    print(f'  {name:<11} {getattr(m, \"__version__\", \"\")}  {m.__file__}')
" || return 1
}

# ------------------------------------------------------------------------------------------------
# the checks
# ------------------------------------------------------------------------------------------------

BUDGET=${GPU_CHECK_BUDGET:-540}
left() { echo $((BUDGET - SECONDS)); }

# step NAME MIN_SECONDS MAX_SECONDS CMD...: run CMD with a timeout of min(MAX, what is left - 10),
# skipped when less than MIN is left. A failure is logged and the script goes on.
step() {
    local name=$1 min=$2 max=$3; shift 3
    local t=$(( $(left) - 10 )); (( t > max )) && t=$max
    echo
    echo "=== $name ($(date -u +%H:%M:%S), ${SECONDS}s in, timeout ${t}s)"
    LAST_RC=1
    if (( t < min )); then echo "SKIPPED: $name needs ${min}s, $(left)s left"; RESULTS+=("$name: skipped (time)"); return; fi
    local t0=$SECONDS
    timeout --kill-after=5 "$t" bash -c '"$@"' _ "$@"  # bash -c: the functions below are exported
    local rc=$?
    LAST_RC=$rc
    local verdict=ok; (( rc == 124 || rc == 137 )) && verdict="TIMED OUT"; (( rc != 0 && rc != 124 && rc != 137 )) && verdict="FAILED rc=$rc"
    echo "--- $name: $verdict in $((SECONDS - t0))s"
    RESULTS+=("$name: $verdict ($((SECONDS - t0))s)")
}

nvdiffrast_build() {
    # torch's CUDA headers (ATen/cuda/CUDAContext.h) include cusparse.h, cublas_v2.h, cusolverDn.h...:
    # where the toolkit beside nvcc lacks them, the pip CUDA wheels in site-packages have them.
    local nvcc_dir; nvcc_dir=$(dirname "$(command -v nvcc)")
    if [[ ! -f ${CUDA_HOME:-$nvcc_dir/..}/include/cusparse.h ]]; then
        local extra; extra=$($PY -c "import glob, os, site
print(':'.join(sorted({os.path.dirname(p) for d in site.getsitepackages() for p in glob.glob(d + '/nvidia/**/include/cusparse.h', recursive=True) + glob.glob(d + '/nvidia/**/include/cublas_v2.h', recursive=True) + glob.glob(d + '/nvidia/**/include/cusolverDn.h', recursive=True)})))")
        echo "cusparse.h is not beside nvcc: CPATH += ${extra:-nothing found}"
        export CPATH=$extra${CPATH:+:$CPATH}
    fi
    $PY - <<'EOF'
import time, torch
t0 = time.perf_counter()
import nvdiffrast.torch as dr
ctx = dr.RasterizeCudaContext(device=torch.device("cuda"))
print(f"nvdiffrast {dr.__name__}: CUDA plugin built and loaded in {time.perf_counter() - t0:.1f}s")
EOF
}

texture_job() {
    local work=$WORK/texture
    rm -rf "$work" && mkdir -p "$work"
    $PY - "$work" "$ARCH" <<'EOF' || return 1
import sys, time
import trimesh
from diffusers import AutoencoderTiny
from nfsd.geometry.builtin_meshes import builtin_mesh
from nfsd.priors.tiny import TINY_AUTOENCODER, build_random_model
work, arch = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
build_random_model(f"{work}/model", arch, prompt_words=("red", "and", "white", "stripes", "front", "side", "back", "overhead", "view"))
# For `--encoder tiny`: TAESD's shape (AutoencoderTiny's defaults) beside a real-shaped model.
(AutoencoderTiny(**TINY_AUTOENCODER) if arch == "tiny" else AutoencoderTiny()).save_pretrained(f"{work}/model/vae_tiny")
mesh = builtin_mesh("default")  # saved without UVs: the job unwraps it with xatlas
trimesh.Trimesh(mesh.positions, mesh.triangles, process=False).export(f"{work}/blob.ply")
print(f"random {arch} model saved to {work}/model and mesh to blob.ply in {time.perf_counter() - t0:.1f}s")
EOF
    du -sh "$work/model"
    run_texture "$work" out $JOB_ARGS
}

texture_job_tiny_encoder() {
    if ! $PY -m nfsd texture --help | grep -q -- "--encoder"; then echo "nfsd texture has no --encoder yet: skipped"; return 0; fi
    [[ -d $WORK/texture/model/vae_tiny ]] || { echo "no model from the texture job"; return 1; }
    run_texture "$WORK/texture" out_tiny $JOB_ARGS --encoder tiny
}

texture_job_pbr() {  # the default job with --material pbr: GGX shading and 5-channel textures on this rasterizer
    if ! $PY -m nfsd texture --help | grep -q -- "--material"; then echo "nfsd texture has no --material yet: skipped"; return 0; fi
    [[ -d $WORK/texture/model ]] || { echo "no model from the texture job"; return 1; }
    run_texture "$WORK/texture" out_pbr $JOB_ARGS --material pbr
}

run_texture() {  # $1 work folder (model/, blob.ply), $2 output folder name, then `nfsd texture` options
    local work=$1 out=$2; shift 2
    local t0; t0=$(date +%s.%N)
    $PY -m nfsd texture "$work/blob.ply" "red and white stripes" --out "$work/$out" --model "$work/model" \
        --device "$DEVICE" "$@" || return 1
    local t1; t1=$(date +%s.%N)
    $PY - "$work/$out/report.json" "$t0" "$t1" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
wall = float(sys.argv[3]) - float(sys.argv[2])
s = r["settings"]
print(f"texture job: wall {wall:.1f}s for `nfsd texture` (process start to outputs written); steps {r['steps_done']}, "
      f"batch {s['batch']}, render {s['render_size']}, texture {s['texture_size']}, renderer {s['renderer']}, "
      f"encoder {s.get('encoder', 'full')}")
print("timings: " + ", ".join(f"{k}={v:.3g}" for k, v in r["timings"].items()))
print(f"peak GPU memory: {r['timings'].get('peak_gpu_memory_gb', float('nan')):.2f} GB (torch.cuda.max_memory_allocated)")
print(f"mesh: {r['mesh']} (uvs_generated: xatlas unwrapped it)")
print(f"info: {r.get('info')}")
EOF
    ls -la "$work/$out"
    cp "$work/$out/report.json" "$OUT/${out}_report.json"; cp "$work/$out/views.png" "$OUT/${out}_views.png"
}

serve_job() {
    local work=$WORK/serve
    rm -rf "$work" && mkdir -p "$work"
    local model=$WORK/texture/model
    [[ -d $model ]] || $PY -c "from nfsd.priors.tiny import build_random_model; build_random_model('$model', '$ARCH')" || return 1
    local port; port=$($PY -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
    $PY -m nfsd serve --port "$port" --data-dir "$work/data" --model "$model" --device "$DEVICE" \
        >"$work/server.log" 2>&1 &
    local server=$!
    $PY - "$port" "$SERVE_STEPS" "$SERVE_SIZES" <<'EOF'
import http.client, io, json, sys, time, uuid
import numpy as np
from nfsd.geometry.builtin_meshes import builtin_mesh
from nfsd.geometry.wire import write_wire_npz

port, steps, (render, texture) = int(sys.argv[1]), int(sys.argv[2]), map(int, sys.argv[3].split(","))

def call(method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, data

def submit(settings):
    buf = io.BytesIO()
    write_wire_npz(builtin_mesh("default"), buf)
    b = "nfsd-gpu-check-" + uuid.uuid4().hex
    body = (f"--{b}\r\nContent-Disposition: form-data; name=\"settings\"\r\n\r\n{json.dumps(settings)}\r\n"
            f"--{b}\r\nContent-Disposition: form-data; name=\"mesh\"; filename=\"mesh.npz\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + buf.getvalue() + f"\r\n--{b}--\r\n".encode()
    status, data = call("POST", "/jobs", body, {"Content-Type": f"multipart/form-data; boundary={b}"})
    assert status == 202, (status, data)
    return json.loads(data)["id"]

def status(job):
    return json.loads(call("GET", f"/jobs/{job}")[1])

def wait(job, until, limit=240):
    t0 = time.time()
    while time.time() - t0 < limit:
        s = status(job)
        if until(s):
            return s
        time.sleep(0.2)
    raise TimeoutError(f"job {job}: still {status(job)['state']} after {limit}s")

t0 = time.time()
while True:
    try:
        health = json.loads(call("GET", "/health")[1])
        break
    except OSError:
        if time.time() - t0 > 60:
            raise SystemExit("the server did not answer /health within 60s (see server.log)")
        time.sleep(0.5)
print(f"server up in {time.time() - t0:.1f}s: {health}")
settings = {"prompt": "red and white stripes", "steps": steps, "render_size": render, "texture_size": texture}

job = submit(settings)
t_sub = time.time()
s = wait(job, lambda s: s["state"] in ("running", "done", "failed") and (s["step"] or 0) >= steps // 2 or s["state"] in ("done", "failed"))
assert s["state"] == "running", f"job 1 ended {s['state']} before it could be cancelled: {s['error']}"
code, _ = call("POST", f"/jobs/{job}/cancel")
t_cancel, seen = time.time(), s["step"]
s = wait(job, lambda s: s["state"] in ("cancelled", "done", "failed"))
print(f"job 1: cancel sent when the status said step {seen}/{steps} ({t_cancel - t_sub:.1f}s after submit, HTTP {code}); "
      f"{s['state']} at step {s['step']}/{s['total']} {time.time() - t_cancel:.2f}s later")
assert s["state"] == "cancelled", s

job = submit(settings)
t_sub = time.time()
s = wait(job, lambda s: s["state"] in ("done", "failed", "cancelled", "interrupted"))
print(f"job 2: {s['state']} in {time.time() - t_sub:.1f}s after submit (elapsed {s['elapsed_seconds']:.1f}s, "
      f"{s['steps_per_second']:.1f} steps/s, model cached from job 1)")
assert s["state"] == "done", s["error"]
code, data = call("GET", f"/jobs/{job}/result")
result = np.load(io.BytesIO(data), allow_pickle=False)
print(f"result: HTTP {code}, texture {result['texture'].shape} {result['texture'].dtype}")
assert result["texture"].shape == (texture, texture, 4)
EOF
    local rc=$?
    kill "$server" 2>/dev/null; wait "$server" 2>/dev/null
    echo "--- server log (tail)"; tail -n 15 "$work/server.log"
    return $rc
}

profile_steps() {
    $PY - "$DEVICE" "$ARCH" "$RENDER_SIZE" "$WORK/texture/model" <<'EOF'
import os, sys, torch
from torch.profiler import ProfilerActivity, profile
from nfsd.distill.engine import TextureJob
from nfsd.settings import TextureConfig
from nfsd.geometry.builtin_meshes import builtin_mesh
from nfsd.priors.prior import load_prior
from nfsd.priors.tiny import build_random_prior
device, arch, render, saved = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
# The texture job's saved model loads faster than random init of ~1 B parameters.
prior = load_prior(saved, torch.device(device)) if os.path.isdir(saved) else build_random_prior(arch, device)
mesh = builtin_mesh("default")
cfg = dict(prompt="red and white stripes", render_size=render, texture_size=1024 if device == "cuda" else 64,
           device=device, progress_every=1)
TextureJob(mesh, TextureConfig(steps=3, **cfg), prior=prior).run()  # warm-up
activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
with profile(activities=activities) as prof:
    TextureJob(mesh, TextureConfig(steps=8, **cfg), prior=prior).run()
key = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
print(prof.key_averages().table(sort_by=key, row_limit=30, max_name_column_width=60))
EOF
}

optional_bench() {  # `nfsd bench speed --arch $1 ...` only if its --help knows the arch
    local arch=$1; shift
    if ! $PY -m nfsd bench speed --help 2>/dev/null | grep -q -- "$arch"; then
        echo "nfsd bench speed has no --arch $arch yet: skipped"; return 0
    fi
    arch=${ARCH_OVERRIDE:-$arch}  # the dry run stays tiny (tiny-sdxl)
    local extra=()
    $PY -m nfsd bench speed --help 2>/dev/null | grep -q -- "--encoder" && extra=(--encoder tiny)
    $PY -m nfsd bench speed --device "$DEVICE" --arch "$arch" "$@"
    [[ ${#extra[@]} -gt 0 ]] && $PY -m nfsd bench speed --device "$DEVICE" --arch "$arch" "$@" "${extra[@]}"
    return 0
}

checks() {
    export OUT PY DEVICE ARCH RENDER_SIZE WORK RENDERER_ARGS SPEED_ARGS COMPILE_ARGS SDXL_1024_ARGS SDXL_512_ARGS JOB_ARGS \
        SERVE_STEPS SERVE_SIZES ARCH_OVERRIDE
    export -f nvdiffrast_build texture_job texture_job_tiny_encoder texture_job_pbr run_texture serve_job profile_steps optional_bench
    RESULTS=()
    echo "=== environment ($(date -u))"
    $PY -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda', torch.version.cuda, '| gpu', torch.cuda.get_device_name() if torch.cuda.is_available() else None)"
    $PY -c "import diffusers, transformers, huggingface_hub; print('diffusers', diffusers.__version__, '| transformers', transformers.__version__, '| huggingface_hub', huggingface_hub.__version__)"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv
    command -v nvcc >/dev/null && nvcc --version | tail -n 2

    step "nvdiffrast build" 60 240 nvdiffrast_build  # (fails in the dry run: no CUDA)
    if (( LAST_RC != 0 )); then  # else every later process would retry the build before falling back
        rm -rf "$SITE/nvdiffrast"
        echo "nvdiffrast removed from $SITE: the checks below run on the PyTorch rasterizer"
    fi
    step "bench renderer" 20 120 $PY -m nfsd bench renderer --device "$DEVICE" $RENDERER_ARGS
    step "bench speed sd15" 60 200 $PY -m nfsd bench speed --device "$DEVICE" $SPEED_ARGS
    step "texture job" 60 180 texture_job
    step "serve: cancel then complete" 40 150 serve_job
    step "profile" 30 90 profile_steps
    step "texture job --encoder tiny" 45 120 texture_job_tiny_encoder
    step "texture job --material pbr" 45 120 texture_job_pbr
    step "bench speed --compile" 90 240 $PY -m nfsd bench speed --device "$DEVICE" $COMPILE_ARGS --compile
    step "bench speed sdxl 1024" 60 150 optional_bench sdxl $SDXL_1024_ARGS
    step "bench speed sdxl 512" 45 120 optional_bench sdxl $SDXL_512_ARGS

    echo
    echo "=== summary (${SECONDS}s)"
    printf '  %s\n' "${RESULTS[@]}"
}

# ------------------------------------------------------------------------------------------------

export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PIP_DISABLE_PIP_VERSION_CHECK=1

case "${1:-run}" in
prepare)
    prepare
    ;;
run)  # on the device
    OUT=${OUT:-/tmp/gpu_check_out}; mkdir -p "$OUT"
    exec > >(tee -a "$OUT/gpu_check.log") 2>&1
    PY=python3 DEVICE=cuda ARCH=sd15 RENDER_SIZE=512 WORK=/tmp/gpu_check
    export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16} TORCH_EXTENSIONS_DIR=/tmp/torch_extensions
    echo "=== install ($(date -u))"
    SITE=/tmp/site
    install "$PY" "$SITE" || { echo "install failed: nothing else can run"; exit 1; }
    export PYTHONPATH=$SITE
    RENDERER_ARGS="--resolution 512 --texture-size 1024,768 --repeat 3"
    SPEED_ARGS="--arch sd15 --render-size 512 --batch 1,4 --texture-size 1024,2048"
    COMPILE_ARGS="--arch sd15 --render-size 512 --batch 1,4 --texture-size 1024"
    SDXL_1024_ARGS="--render-size 1024 --batch 1 --texture-size 1024 --steps 5"
    SDXL_512_ARGS="--render-size 512 --batch 1,4 --texture-size 1024 --steps 5"
    JOB_ARGS=""
    SERVE_STEPS=200 SERVE_SIZES=512,1024 ARCH_OVERRIDE=
    checks
    ;;
dry-run)  # here, on the CPU at tiny sizes
    OUT=${OUT:-/tmp/gpu_check_dry}; rm -rf "$OUT"; mkdir -p "$OUT"
    exec > >(tee -a "$OUT/gpu_check.log") 2>&1
    PY312=${PY312:-python3.12}
    echo "=== install with $PY312 into $OUT/site (as on the device)"
    # A stand-in for the device image: what it has (IMAGE_HAS but torch) from PyPI, beside the target.
    "$PY312" -m pip install -q --target "$OUT/tools" ${IMAGE_HAS//torch/} || exit 1
    SITE=$OUT/site
    PYTHONPATH="$OUT/tools" install "$PY312" "$SITE" || { echo "install failed"; exit 1; }
    # The checks themselves run with this machine's Python (it has a CPU torch), on this tree.
    PY=${PY:-python} DEVICE=cpu ARCH=tiny RENDER_SIZE=64 WORK=$OUT/work
    export OMP_NUM_THREADS=1  # the CPU here is shared
    export PYTHONPATH=$ROOT/backend
    RENDERER_ARGS="--resolution 32 --texture-size 64,48 --repeat 1"
    SPEED_ARGS="--arch tiny --render-size 32 --batch 1,2 --texture-size 64,128 --warmup 1 --steps 2 --mesh cube"
    COMPILE_ARGS="--arch tiny --render-size 32 --batch 1 --texture-size 64 --warmup 1 --steps 1 --mesh cube"
    SDXL_1024_ARGS="--render-size 64 --batch 1 --texture-size 64 --warmup 1 --steps 1 --mesh cube"
    SDXL_512_ARGS="--render-size 32 --batch 1 --texture-size 64 --warmup 1 --steps 1 --mesh cube"
    JOB_ARGS="--steps 4 --render-size 32 --texture-size 64 --threads 1"
    SERVE_STEPS=20 SERVE_SIZES=32,64 ARCH_OVERRIDE=tiny-sdxl
    checks
    ;;
*)
    echo "usage: scripts/gpu_check.sh [prepare|dry-run|run]" >&2; exit 2
    ;;
esac
