"""Quality benchmark: NFSD against SDS (s=7.5 and s=100), CSD and DDS with the built-in prior.

    nfsd bench quality [--prompts "red and white stripes" ...] [--seeds 3] [--steps 150] [--out DIR]
    python -m nfsd.builtin.training.quality --smoke          # 2 steps, 1 prompt, 1 seed: checks the pipeline

Every method textures the same meshes from the same prompts and seeds (so the same random cameras),
then each result is rendered from fixed orbit views (flat lighting, grey background) and scored.
DDS edits a texture rather than making one, so its row is an edit that must land on the prompt: the
mesh is first textured with NFSD (s=7.5, the same steps and seed) from a neighbouring prompt, the
prompt's first colour shifted (:func:`edit_source`: "red and white stripes" from "blue and white
stripes"), then DDS runs the same number of steps from that texture (``source_prompt`` = the
neighbour, seed + 1000 as in ``nfsd bench edit``). Its time is both stages. The scores:

- prompt accuracy: share of views the built-in classifier assigns to the prompt's pattern and
  colours among all 148 dataset classes (the R-precision analogue);
- saturation: mean HSV saturation of the object's pixels;
- sharpness: high-frequency energy (image minus its Gaussian blur, inside the object, at the
  32x32, the first prior's size) divided by the same measure on the reference: 1 = as crisp as the data, below 1
  = over-smoothed;
- clipped: share of object pixel channels at 0 or 1 (over-saturation piles colours at the gamut edge).

The reference row ("dataset textures") lays the dataset's own images of the same prompts on the
same mesh as textures and renders them from the same views: the ceiling for prompt accuracy and
the yardstick for saturation and sharpness.

The table is printed and written to BENCHMARKS.md (its own section, replaced on each run).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import vocabulary as vocab
from . import dataset as ds
from ...bench.report import repo_root, write_section
from .classifier import load_classifier, prompt_matches
from .view_metrics import clipped_fraction, high_frequency_energy, render_result, saturation

# Six prompts (one per pattern), 72 textures: about 20 minutes on a 2-core CPU with two threads.
DEFAULT_PROMPTS = ("red and white stripes", "blue dots on yellow", "solid green", "checkerboard of white and black",
                   "yellow and blue waves", "gradient from red to black")  # one per pattern
METHODS = {  # label: (mode, guidance scale)
    "NFSD s=7.5": ("nfsd", 7.5),
    "SDS s=7.5": ("sds", 7.5),
    "SDS s=100": ("sds", 100.0),
    "CSD s=7.5": ("csd", 7.5),
    "DDS s=7.5": ("dds", 7.5),  # an edit from edit_source(prompt)'s NFSD texture (module doc)
}
# edit_source: each colour is replaced by the one four places on in dataset.COLOUR_NAMES (red <-> blue,
# orange <-> purple, yellow <-> white, green <-> black): a change the classifier tells apart.
_SHIFT = 4
SECTION_START = "<!-- quality-benchmark:start -->"
SECTION_END = "<!-- quality-benchmark:end -->"


@dataclass
class QualityConfig:
    prompts: tuple[str, ...] = DEFAULT_PROMPTS
    methods: tuple[str, ...] = tuple(METHODS)
    seeds: int = 3
    meshes: tuple[str, ...] = ("blob",)
    steps: int = 300
    texture_size: int = 128
    render_size: int = 64
    batch: int = 2
    device: str = "cpu"
    model: str = "builtin"  # another prior trained on this dataset could be scored the same way
    classifier: str | None = None  # classifier weights; default: the shipped ones
    view_azimuths: tuple[float, ...] = (0.0, 90.0, 180.0, 270.0)
    view_elevation: float = 15.0
    extra: dict = field(default_factory=dict)  # more TextureConfig fields, same for every method


def edit_source(prompt: str) -> str:
    """The dataset prompt DDS's row edits from: ``prompt`` with its first colour replaced by the one
    four places on in ``dataset.COLOUR_NAMES`` (then further on while it clashes with the other colour)."""
    spec = vocab.parse_prompt(prompt)
    names = vocab.COLOUR_NAMES
    i = names.index(spec.colours[0])
    for k in range(_SHIFT, _SHIFT + len(names)):
        colour = names[(i + k) % len(names)]
        if colour not in spec.colours:
            return vocab.TextureSpec(spec.pattern, (colour,) + spec.colours[1:]).prompt
    raise AssertionError("unreachable: eight colours")


def dataset_reference(mesh, prompts, classifier, cfg: "QualityConfig", n_per_prompt: int = 4, seed: int = 0) -> dict:
    """The same measures on the dataset's own textures laid on ``mesh`` and rendered from the same
    views: the ceiling for prompt accuracy and the yardstick for saturation and sharpness."""
    from types import SimpleNamespace

    g = torch.Generator().manual_seed(seed)
    ref = {}
    for prompt in prompts:
        spec = vocab.parse_prompt(prompt)
        textures = ds.sample_batch([spec] * n_per_prompt, g,
                                   ds.DatasetConfig(size=cfg.texture_size, object_fraction=0.0))
        views, masks = [], []
        for tex in textures:
            # Textures are stored row 0 = bottom; dataset images have row 0 at the top.
            arr = (tex.permute(1, 2, 0).flip(0).clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
            fake = SimpleNamespace(mesh=mesh, uvs=mesh.uvs, texture=arr)
            im, m = render_result(fake, cfg.render_size, cfg.view_azimuths, cfg.view_elevation)
            views.append(im)
            masks.append(m)
        images, mask = torch.cat(views), torch.cat(masks)
        ref[prompt] = {"prompt_accuracy": float(prompt_matches(classifier, images, [prompt] * len(images)).float().mean()),
                       "saturation": saturation(images, mask), "clipped": clipped_fraction(images, mask),
                       "hf": high_frequency_energy(images, mask)}
    return ref


def run_benchmark(cfg: QualityConfig, out_dir: Path | None = None, log=print) -> dict:
    """Texture every (method, prompt, seed, mesh) and score it; returns per-run rows and the summary."""
    from ...geometry.builtin_meshes import builtin_mesh
    from ...geometry.unwrap import ensure_uvs
    from ...distill.engine import texture_mesh
    from ...settings import TextureConfig
    from ...priors.prior import load_prior

    for p in cfg.prompts:
        vocab.parse_prompt(p)  # fail early on a prompt the classifier cannot judge
    unknown = [m for m in cfg.methods if m not in METHODS]
    if unknown:
        from ...errors import ConfigError

        raise ConfigError(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    classifier = load_classifier(cfg.classifier) if cfg.classifier else load_classifier()
    prior = load_prior(cfg.model, cfg.device)
    rows, refs = [], {}
    total = len(cfg.methods) * len(cfg.prompts) * cfg.seeds * len(cfg.meshes)

    def run(mesh, prompt, seed, mode, scale):
        common = dict(guidance_scale=scale, steps=cfg.steps, texture_size=cfg.texture_size, render_size=cfg.render_size,
                      batch=cfg.batch, model=cfg.model, device=cfg.device, **cfg.extra)
        if mode != "dds":
            return texture_mesh(mesh, TextureConfig(prompt=prompt, mode=mode, seed=seed, **common), prior=prior)
        source = edit_source(prompt)
        first = texture_mesh(mesh, TextureConfig(prompt=source, mode="nfsd", seed=seed, **common), prior=prior)
        return texture_mesh(mesh, TextureConfig(prompt=prompt, mode="dds", source_prompt=source, seed=seed + 1000,
                                                **common), prior=prior, init_texture=first.texture)

    for mesh_name in cfg.meshes:
        mesh = ensure_uvs(builtin_mesh(mesh_name))
        ref = refs[mesh_name] = dataset_reference(mesh, cfg.prompts, classifier, cfg)
        for prompt in cfg.prompts:
            for seed in range(cfg.seeds):
                for label in cfg.methods:
                    mode, scale = METHODS[label]
                    t0 = time.perf_counter()
                    result = run(mesh, prompt, seed, mode, scale)
                    seconds = time.perf_counter() - t0
                    images, mask = render_result(result, cfg.render_size, cfg.view_azimuths, cfg.view_elevation)
                    acc = float(prompt_matches(classifier, images, [prompt] * len(images)).float().mean())
                    row = {"method": label, "prompt": prompt, "seed": seed, "mesh": mesh_name,
                           "prompt_accuracy": acc, "saturation": saturation(images, mask),
                           "clipped": clipped_fraction(images, mask),
                           # A solid colour has (almost) no high frequencies to compare with.
                           "sharpness": (high_frequency_energy(images, mask) / ref[prompt]["hf"]
                                         if ref[prompt]["hf"] > 1e-4 else None),
                           "seconds": seconds, "final_loss": result.losses[-1] if result.losses else None}
                    rows.append(row)
                    log(f"[{len(rows)}/{total}] {label:11s} {prompt!r} seed {seed}: acc {acc:.2f} "
                        f"sat {row['saturation']:.2f} sharp {_fmt(row['sharpness'])} clip {row['clipped']:.2f} "
                        f"({seconds:.0f}s)")
                    if out_dir is not None:
                        _save_views(out_dir, row, images)
    summary = summarize(rows, refs, cfg)
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "quality.json").write_text(
            json.dumps({"rows": rows, "summary": summary, "reference": refs}, indent=1) + "\n")
    return {"rows": rows, "summary": summary, "reference": refs}


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def _save_views(out_dir, row, images):
    from PIL import Image

    out = Path(out_dir) / "views"
    out.mkdir(parents=True, exist_ok=True)
    strip = (images.permute(2, 0, 3, 1).reshape(images.shape[2], -1, 3).clamp(0, 1).numpy() * 255).astype(np.uint8)
    name = f"{row['method']}_{row['prompt']}_{row['mesh']}_s{row['seed']}".replace(" ", "_").replace("=", "")
    Image.fromarray(strip).save(out / f"{name}.png")


def _mean_std(values):
    v = [x for x in values if x is not None and not math.isnan(x)]
    if not v:
        return float("nan"), float("nan")
    return float(np.mean(v)), float(np.std(v))


def summarize(rows, refs, cfg: QualityConfig) -> list[dict]:
    """One line per method: means over all runs (std over the per-seed means)."""
    out = []
    for label in cfg.methods:
        mine = [r for r in rows if r["method"] == label]
        line = {"method": label, "runs": len(mine)}
        for key in ("prompt_accuracy", "saturation", "sharpness", "clipped", "seconds"):
            per_seed = [_mean_std([r[key] for r in mine if r["seed"] == s])[0] for s in range(cfg.seeds)]
            line[key] = _mean_std([r[key] for r in mine])[0]
            line[key + "_seed_std"] = _mean_std(per_seed)[1]
        out.append(line)
    refs_flat = [r for ref in refs.values() for r in ref.values()]
    out.append({"method": "dataset textures", "runs": None,
                "prompt_accuracy": _mean_std([r["prompt_accuracy"] for r in refs_flat])[0],
                "saturation": _mean_std([r["saturation"] for r in refs_flat])[0], "sharpness": 1.0,
                "clipped": _mean_std([r["clipped"] for r in refs_flat])[0], "seconds": None})
    return out


def format_table(summary: list[dict]) -> str:
    """Markdown table of ``summarize``'s lines."""
    head = "| method | runs | prompt accuracy | saturation | sharpness (data = 1) | clipped | s / run |\n" \
           "|---|---|---|---|---|---|---|\n"

    def cell(line, key, fmt="{:.2f}"):
        v = line.get(key)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        s = fmt.format(v)
        std = line.get(key + "_seed_std")
        return f"{s} ± {fmt.format(std)}" if std is not None and not math.isnan(std) and line["runs"] else s

    body = "".join(
        f"| {ln['method']} | {ln['runs'] if ln['runs'] is not None else '-'} | {cell(ln, 'prompt_accuracy')} | "
        f"{cell(ln, 'saturation')} | {cell(ln, 'sharpness')} | {cell(ln, 'clipped', '{:.3f}')} | "
        f"{cell(ln, 'seconds', '{:.0f}')} |\n"
        for ln in summary
    )
    return head + body


def report_markdown(result: dict, cfg: QualityConfig, seconds: float) -> str:
    return (
        "## Quality: NFSD vs SDS vs CSD vs DDS (built-in prior)\n\n"
        f"`nfsd bench quality` — prompts: {', '.join(repr(p) for p in cfg.prompts)}; seeds 0..{cfg.seeds - 1}; "
        f"meshes: {', '.join(cfg.meshes)}; {cfg.steps} steps, batch {cfg.batch}, render {cfg.render_size}, "
        f"texture {cfg.texture_size}, device {cfg.device}; scored on {len(cfg.view_azimuths)} orbit views "
        f"(elevation {cfg.view_elevation:g}, flat light, grey background). Total {seconds / 60:.1f} min.\n\n"
        + format_table(result["summary"])
        + "\nprompt accuracy: share of views the built-in classifier assigns to the prompt's pattern and colours "
          "(148 classes, chance 0.7%); saturation: mean HSV S of object pixels; sharpness: high-frequency energy "
          "at 32x32 relative to the reference (patterned prompts only); clipped: share of object channels at 0 or 1. ± is the std over "
          "the per-seed means. DDS: an edit of the NFSD texture of a neighbouring prompt (first colour "
          "shifted: 'blue and white stripes' -> 'red and white stripes'), its time both stages. Reference row: dataset images of the same prompts used as the texture of the "
          "same mesh, rendered from the same views.\n"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="nfsd bench quality", description="NFSD vs SDS vs CSD vs DDS with the built-in prior.")
    d = QualityConfig()
    parser.add_argument("--prompts", nargs="+", default=list(d.prompts), help="dataset prompts (default: one per pattern)")
    parser.add_argument("--methods", nargs="+", default=list(d.methods), choices=list(METHODS), metavar="METHOD",
                        help=f"subset of {list(METHODS)}")
    parser.add_argument("--seeds", type=int, default=d.seeds, help="seeds 0..N-1 (default %(default)s)")
    parser.add_argument("--meshes", nargs="+", default=list(d.meshes), help="built-in meshes (default %(default)s)")
    parser.add_argument("--steps", type=int, default=d.steps)
    parser.add_argument("--texture-size", type=int, default=d.texture_size)
    parser.add_argument("--render-size", type=int, default=d.render_size)
    parser.add_argument("--batch", type=int, default=d.batch)
    parser.add_argument("--device", default=d.device, help="cpu | cuda | auto (default %(default)s)")
    parser.add_argument("--model", default=d.model, help="prior (default %(default)s)")
    parser.add_argument("--classifier", default=None, help="classifier weights (default: the shipped ones)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch (default 1: on a shared CPU more threads ran 10x slower)")
    parser.add_argument("--out", type=Path, default=None, help="folder for per-run JSON and view strips")
    parser.add_argument("--benchmarks", type=Path, default=None,
                        help="markdown file to write the table to (default: BENCHMARKS.md at the repo root)")
    parser.add_argument("--no-write", action="store_true", help="print only, do not touch BENCHMARKS.md")
    parser.add_argument("--smoke", action="store_true", help="2 steps, 1 prompt, 1 seed, nothing written")
    args = parser.parse_args(argv)
    if args.smoke:
        args.steps, args.seeds, args.prompts, args.no_write = 2, 1, args.prompts[:1], True
        args.texture_size, args.render_size, args.batch = 32, 32, 1
    if args.seeds < 1 or args.steps < 1:
        parser.error("--seeds and --steps must be at least 1")
    cfg = QualityConfig(prompts=tuple(args.prompts), methods=tuple(args.methods), seeds=args.seeds,
                        meshes=tuple(args.meshes), steps=args.steps, texture_size=args.texture_size,
                        render_size=args.render_size, batch=args.batch, device=args.device,
                        model=args.model, classifier=args.classifier)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    result = run_benchmark(cfg, args.out, log=lambda s: print(s, flush=True))
    text = report_markdown(result, cfg, time.perf_counter() - t0)
    print(text)
    if not args.no_write:
        path = args.benchmarks or repo_root() / "BENCHMARKS.md"
        write_section(path, text, SECTION_START, SECTION_END)
        print(f"written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
