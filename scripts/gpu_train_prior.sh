#!/usr/bin/env bash
# Train built-in prior candidates on a lent GPU in ONE device call (issue 16): three runs side by side
# on one GPU, each drawing its batches in 4 worker processes (the machine has 16 cores), each under
# the same time limit (the learning rate decays to fit it):
#
#   A  the shipped prior (48,96) continued at 64 px, batch 256, lr 3e-4
#   B  a wider UNet (64,128) from scratch, batch 128, lr 1e-3
#   C  a third level (48,96,96) from scratch, batch 128, lr 1e-3
#
# All three use the shipped autoencoder and views of 96 generated meshes. Here, once:
#
#   mkdir -p .gpuwhl                       (.gitignore leaves it out of commits)
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpuwhl \
#       diffusers==0.42.1 xatlas==0.0.11 importlib_metadata==10.2.0 zipp==4.1.2
#
# then the device call, and give_back at once:
#
#   run(command="bash scripts/gpu_train_prior.sh", carry=[".gpuwhl"], timeout_s=560)
#
# `bash scripts/gpu_train_prior.sh continue` instead: one run, the shipped prior continued (13 workers;
# SEED picks the generated meshes and the batches, LR the peak learning rate).
# Back come A.tar, B.tar, C.tar (prior folders without vae/: copy the shipped one in) and their logs.
# Dry run on the CPU: TRAIN_SECONDS=15 SCENE_MESHES=4 DEVICE=cpu OUT=/tmp/dry bash scripts/gpu_train_prior.sh
set -u
OUT=${OUT:?OUT names the output folder}
T=${TRAIN_SECONDS:-390}
MESHES=${SCENE_MESHES:-96}
DEVICE=${DEVICE:-cuda}
if [ -d .gpuwhl ] && [ "$DEVICE" = cuda ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpuwhl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/backend${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
{ date -u; nvidia-smi -L 2>/dev/null; nproc; python3 -c "import torch, diffusers, transformers; print(torch.__version__, diffusers.__version__, transformers.__version__)"; } > "$OUT/env.txt" 2>&1
VAE=backend/nfsd/builtin/weights/prior/vae
common=(--size 64 --scene-meshes "$MESHES" --views-per-mesh 32 --steps 100000 --device "$DEVICE" --workers 4
        --threads 4 --time-limit "$T" --save-every 1000)
run() {  # name, then its own options
    local name=$1; shift
    timeout $((T + 60)) python3 -m nfsd.builtin.training.train_prior "${common[@]}" "$@" --out "$OUT/$name" > "$OUT/$name.log" 2>&1
    echo "$name exit $?" >> "$OUT/$name.log"
}
if [ "${1:-candidates}" = continue ]; then  # one run: the shipped prior continued, all cores drawing its batches
    names=A
    common=(--size 64 --scene-meshes "$MESHES" --views-per-mesh 32 --steps 100000 --device "$DEVICE" --workers 13
            --threads 12 --time-limit "$T" --save-every 1000)
    run A --resume backend/nfsd/builtin/weights/prior --batch 256 --lr "${LR:-2e-4}" --warmup 20 --seed "${SEED:-9}"
else
    names="A B C"
    run A --resume backend/nfsd/builtin/weights/prior --batch 256 --lr 3e-4 --warmup 50 --seed 6 &
    run B --vae "$VAE" --channels 64,128 --batch 128 --lr 1e-3 --warmup 200 --seed 7 &
    run C --vae "$VAE" --channels 48,96,96 --batch 128 --lr 1e-3 --warmup 200 --seed 8 &
    wait
fi
for name in $names; do
    [ -d "$OUT/$name" ] && (cd "$OUT" && tar cf "$name.tar" --exclude vae "$name" && rm -rf "$name")
    tail -n 4 "$OUT/$name.log"
done
ls -la "$OUT"
