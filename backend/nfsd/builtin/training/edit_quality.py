"""Edit benchmark: change a colour of a texture with DDS against plain NFSD continuation (built-in prior).

    nfsd bench edit [--seeds 1] [--steps 100] [--source-steps 200]
    python -m nfsd.builtin.training.edit_quality --smoke      # 2 steps, 1 edit, 1 seed: checks the pipeline

For each edit (source prompt -> target prompt, colour only) and seed: the mesh is first textured
from the source prompt with NFSD (the artist's first result), then that texture is continued for
the same number of steps, with the same seed (same cameras, t and noise), by

- DDS: ``mode="dds"``, ``source_prompt`` = the source prompt, ``prompt`` = the target prompt;
- NFSD: plain continuation with the target prompt (what "Continue" with a new prompt did before).

Scores, on fixed orbit views (flat light, grey background) and on the texture itself:

- target colours: share of views whose most likely class (built-in classifier) has the target's
  colours, whatever its pattern (the classifier often reads stripes bent over a head as waves);
- target accuracy: share of views whose most likely class has the target's pattern AND colours;
- source colours: share of views still read with the source's colours (an edit should leave them);
- layout kept: Pearson correlation of the texel luminance of the result with that of the source
  texture, over the texels some triangle covers (1 = every light and dark texel where it was).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import vocabulary as vocab
from .classifier import CLASS_KEYS, class_log_probs, load_classifier, prompt_matches
from ...bench.report import repo_root, write_section
from .view_metrics import render_result

# Colour-only edits: the pattern stays, one colour changes.
DEFAULT_EDITS = (("red and white stripes", "blue and white stripes"),
                 ("blue dots on yellow", "red dots on yellow"),
                 ("yellow and blue waves", "yellow and red waves"))
METHODS = ("DDS", "NFSD continuation")
SECTION_START = "<!-- edit-benchmark:start -->"
SECTION_END = "<!-- edit-benchmark:end -->"


@dataclass
class EditConfig:
    edits: tuple[tuple[str, str], ...] = DEFAULT_EDITS
    seeds: int = 1
    source_steps: int = 200
    steps: int = 100
    texture_size: int = 128
    render_size: int = 64
    batch: int = 2
    mesh: str = "blob"
    device: str = "cpu"
    model: str = "builtin"
    view_azimuths: tuple[float, ...] = (0.0, 90.0, 180.0, 270.0)
    view_elevation: float = 15.0


def luminance_correlation(texture: np.ndarray, source: np.ndarray, covered: np.ndarray) -> float:
    """Pearson correlation of the Rec. 709 luminance of two uint8 ``[H, W, 3]`` textures over ``covered`` texels."""
    weights = np.array([0.2126, 0.7152, 0.0722])
    a = (texture[covered][:, :3].astype(np.float64) / 255) @ weights
    b = (source[covered][:, :3].astype(np.float64) / 255) @ weights
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def colour_matches(classifier, images: torch.Tensor, prompt: str) -> torch.Tensor:
    """``[N]`` bool: does the most likely class of each view have the colours of ``prompt``?"""
    wanted = frozenset(vocab.parse_prompt(prompt).colours)
    return torch.tensor([CLASS_KEYS[i][1] == wanted for i in class_log_probs(classifier, images).argmax(1).tolist()])


def run_benchmark(cfg: EditConfig, log=print) -> dict:
    from ...geometry.builtin_meshes import builtin_mesh
    from ...geometry.unwrap import ensure_uvs
    from ...distill.engine import texture_mesh
    from ...settings import TextureConfig
    from ...priors.prior import load_prior
    from ...distill.texels import uv_coverage

    classifier = load_classifier()
    prior = load_prior(cfg.model, cfg.device)
    mesh = ensure_uvs(builtin_mesh(cfg.mesh))
    covered = uv_coverage(torch.from_numpy(mesh.uvs), cfg.texture_size).numpy()
    common = dict(texture_size=cfg.texture_size, render_size=cfg.render_size, batch=cfg.batch, model=cfg.model,
                  device=cfg.device)

    def score(result, source_prompt, target_prompt, source_texture):
        images, _ = render_result(result, cfg.render_size, cfg.view_azimuths, cfg.view_elevation)
        n = len(images)
        return {"target_colours": float(colour_matches(classifier, images, target_prompt).float().mean()),
                "target_accuracy": float(prompt_matches(classifier, images, [target_prompt] * n).float().mean()),
                "source_colours": float(colour_matches(classifier, images, source_prompt).float().mean()),
                "layout": luminance_correlation(result.texture, source_texture, covered)}

    rows = []
    for source_prompt, target_prompt in cfg.edits:
        for seed in range(cfg.seeds):
            t0 = time.perf_counter()
            first = texture_mesh(mesh, TextureConfig(prompt=source_prompt, steps=cfg.source_steps, seed=seed, **common),
                                 prior=prior)
            source = first.texture
            row = {"method": "source texture", "source": source_prompt, "target": target_prompt, "seed": seed,
                   "seconds": time.perf_counter() - t0, **score(first, source_prompt, target_prompt, source)}
            rows.append(row)
            log(_line(row))
            for method in METHODS:
                extra = dict(mode="dds", source_prompt=source_prompt) if method == "DDS" else dict(mode="nfsd")
                t0 = time.perf_counter()
                # seed + 1000: the edit's cameras and noise differ from the source run's, the same for both methods.
                result = texture_mesh(mesh, TextureConfig(prompt=target_prompt, steps=cfg.steps, seed=seed + 1000,
                                                          **extra, **common), prior=prior, init_texture=source)
                row = {"method": method, "source": source_prompt, "target": target_prompt, "seed": seed,
                       "seconds": time.perf_counter() - t0, **score(result, source_prompt, target_prompt, source)}
                rows.append(row)
                log(_line(row))
    return {"rows": rows, "summary": summarize(rows)}


def _line(row) -> str:
    return (f"{row['method']:18s} {row['source']!r} -> {row['target']!r} seed {row['seed']}: "
            f"target colours {row['target_colours']:.2f} acc {row['target_accuracy']:.2f} "
            f"source colours {row['source_colours']:.2f} "
            f"layout {row['layout']:.3f} ({row['seconds']:.0f}s)")


def summarize(rows) -> list[dict]:
    out = []
    for method in ("source texture",) + METHODS:
        mine = [r for r in rows if r["method"] == method]
        line = {"method": method, "runs": len(mine)}
        for key in ("target_colours", "target_accuracy", "source_colours", "layout", "seconds"):
            values = [r[key] for r in mine if not math.isnan(r[key])]
            line[key] = float(np.mean(values)) if values else float("nan")
            line[key + "_min"] = float(np.min(values)) if values else float("nan")
        out.append(line)
    return out


def format_table(summary, rows) -> str:
    text = ("| method | runs | target colours | target accuracy | source colours | layout kept (luminance r, mean / min) "
            "| s / run |\n|---|---|---|---|---|---|---|\n")
    for ln in summary:
        text += (f"| {ln['method']} | {ln['runs']} | {ln['target_colours']:.2f} | {ln['target_accuracy']:.2f} | "
                 f"{ln['source_colours']:.2f} | "
                 f"{ln['layout']:.3f} / {ln['layout_min']:.3f} | {ln['seconds']:.0f} |\n")
    text += "\nPer edit (mean over seeds): target colours, layout r\n\n| edit | DDS | NFSD continuation |\n|---|---|---|\n"
    edits = dict.fromkeys((r["source"], r["target"]) for r in rows)
    for src, tgt in edits:
        cells = []
        for method in METHODS:
            mine = [r for r in rows if r["method"] == method and r["source"] == src and r["target"] == tgt]
            cells.append(f"{np.mean([r['target_colours'] for r in mine]):.2f}, "
                         f"{np.mean([r['layout'] for r in mine]):.3f}")
        text += f"| {src} -> {tgt} | {cells[0]} | {cells[1]} |\n"
    return text


def report_markdown(result: dict, cfg: EditConfig, seconds: float, command: str) -> str:
    return (
        "## Edit: DDS vs NFSD continuation (built-in prior)\n\n"
        f"`{command}` — edits: {'; '.join(f'{s!r} -> {t!r}' for s, t in cfg.edits)}; seeds 0..{cfg.seeds - 1}; "
        f"mesh {cfg.mesh}; source textured with NFSD for {cfg.source_steps} steps, then each method runs "
        f"{cfg.steps} steps from it (same seed, cameras, t and noise); batch {cfg.batch}, render {cfg.render_size}, "
        f"texture {cfg.texture_size}, device {cfg.device}, 1 thread. Total {seconds / 60:.1f} min.\n\n"
        + format_table(result["summary"], result["rows"])
        + "\ntarget / source colours: share of 4 orbit views (elevation 15, flat light) whose most likely class "
          "(built-in classifier, 148 classes) has the target's / source's colours; target accuracy: pattern and "
          "colours. layout kept: Pearson correlation "
          "of texel luminance with the source texture over covered texels (the source row is 1 by definition).\n"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="nfsd bench edit", description="DDS vs NFSD continuation for colour edits.")
    d = EditConfig()
    parser.add_argument("--seeds", type=int, default=d.seeds)
    parser.add_argument("--steps", type=int, default=d.steps, help="edit steps (default %(default)s)")
    parser.add_argument("--source-steps", type=int, default=d.source_steps, help="steps of the source texture")
    parser.add_argument("--texture-size", type=int, default=d.texture_size)
    parser.add_argument("--render-size", type=int, default=d.render_size)
    parser.add_argument("--batch", type=int, default=d.batch)
    parser.add_argument("--device", default=d.device)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch (default 1)")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    parser.add_argument("--benchmarks", type=Path, default=None, help="markdown file (default: BENCHMARKS.md)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--smoke", action="store_true", help="2 steps, 1 edit, 1 seed, nothing written")
    args = parser.parse_args(argv)
    edits = d.edits
    if args.smoke:
        args.steps, args.source_steps, args.seeds, args.no_write = 2, 2, 1, True
        args.texture_size, args.render_size, args.batch = 32, 32, 1
        edits = edits[:1]
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    cfg = EditConfig(edits=edits, seeds=args.seeds, source_steps=args.source_steps, steps=args.steps,
                     texture_size=args.texture_size, render_size=args.render_size, batch=args.batch, device=args.device)
    t0 = time.perf_counter()
    result = run_benchmark(cfg, log=lambda s: print(s, flush=True))
    command = "nfsd bench edit" + "".join(f" --{k.replace('_', '-')} {getattr(args, k)}"
                                          for k in ("seeds", "steps", "source_steps") if getattr(args, k) != getattr(d, k))
    text = report_markdown(result, cfg, time.perf_counter() - t0, command)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    if not args.no_write:
        path = args.benchmarks or repo_root() / "BENCHMARKS.md"
        write_section(path, text, SECTION_START, SECTION_END)
        print(f"written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
