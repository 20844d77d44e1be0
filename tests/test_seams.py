"""Seam mismatch (nfsd.geometry.seams): where the UV seams are, and how much the colour jumps across them."""

import numpy as np
import torch

from nfsd.geometry.builtin_meshes import builtin_mesh
from nfsd.geometry.seams import find_seam_edges, seam_mismatch

# A unit square in the z = 0 plane cut along its diagonal (0-2) into two UV islands: the left
# triangle maps (x, y) -> (0.05 + 0.4 x, 0.1 + 0.8 y), the right one is laid transposed in the
# right half, (x, y) -> (0.55 + 0.4 y, 0.1 + 0.8 x).
POSITIONS = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], np.float32)
TRIANGLES = np.array([[0, 2, 3], [0, 1, 2]], np.int32)


def _left(p):
    return (0.05 + 0.4 * p[0], 0.1 + 0.8 * p[1])


def _right(p):
    return (0.55 + 0.4 * p[1], 0.1 + 0.8 * p[0])


UVS = np.array([[_left(POSITIONS[v]) for v in TRIANGLES[0]], [_right(POSITIONS[v]) for v in TRIANGLES[1]]], np.float32)
SIZE = 64


def _texel_points():
    """The 3D point (x, y) each texel centre stands for: the left half through the left island's
    map, the right half through the right one's (extended beyond the islands, so bilinear lookups
    near the edges read the same affine field)."""
    c = (np.arange(SIZE) + 0.5) / SIZE
    u, v = np.meshgrid(c, c, indexing="xy")  # row = v (row 0 bottom), column = u
    left = u < 0.5
    x = np.where(left, (u - 0.05) / 0.4, (v - 0.1) / 0.8)
    y = np.where(left, (v - 0.1) / 0.8, (u - 0.55) / 0.4)
    return x, y, left


def test_seam_edges_of_the_builtin_meshes_are_their_cuts():
    # Lat-long meshes: the back meridian (n_lat - 2 edges) and every edge to a pole (the poles
    # have one UV per triangle); the cube: its 12 edges of 8 segments, 2 units long each.
    blob, sphere, cube = (builtin_mesh(n) for n in ("blob", "sphere", "cube"))
    assert len(find_seam_edges(blob.positions, blob.triangles, blob.uvs)) == 2 * 64 + 30
    assert len(find_seam_edges(sphere.positions, sphere.triangles, sphere.uvs)) == 2 * 48 + 22
    edges = find_seam_edges(cube.positions, cube.triangles, cube.uvs)
    assert len(edges) == 96 and abs(edges.length.sum() - 24.0) < 1e-4


def test_split_vertices_still_make_a_seam():
    # Files split vertices along UV seams: four corners become six; the diagonal is still a seam.
    positions = np.concatenate([POSITIONS, POSITIONS[[0, 2]]])
    triangles = np.array([[0, 2, 3], [4, 1, 5]], np.int32)
    edges = find_seam_edges(positions, triangles, UVS)
    assert len(edges) == 1 and abs(edges.length[0] - np.sqrt(2)) < 1e-6


def test_a_texture_continuous_on_the_surface_scores_zero():
    x, y, _ = _texel_points()
    texture = torch.from_numpy(np.stack([x, y, 0.5 + 0 * x], -1).astype(np.float32) * 0.5 + 0.25)
    score = seam_mismatch(texture, POSITIONS, TRIANGLES, UVS)
    assert score["edges"] == 1
    assert score["mean"] < 1e-5 and score["max"] < 1e-5


def test_two_colours_on_two_islands_score_their_difference():
    _, _, left = _texel_points()
    red, yellow = np.array([1.0, 0.0, 0.0]), np.array([1.0, 1.0, 0.0])
    texture = np.where(left[..., None], red, yellow).astype(np.float32)
    score = seam_mismatch(torch.from_numpy(texture), POSITIONS, TRIANGLES, UVS)
    assert abs(score["mean"] - 1.0) < 1e-5 and abs(score["p95"] - 1.0) < 1e-5
    # uint8 textures (what a result holds) read the same.
    score8 = seam_mismatch((texture * 255).astype(np.uint8), POSITIONS, TRIANGLES, UVS)
    assert abs(score8["mean"] - 1.0) < 1e-5


def test_longer_seam_edges_weigh_more():
    # Two seam edges of lengths 1 and 3 with mismatches 1 and 0: the mean is 1 / 4.
    positions = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, -1, 0],
                          [0, 0, 5], [3, 0, 5], [0, 1, 5], [0, -1, 5]], np.float32)
    # Triangles 0/1 share only the edge 0-1 (length 1), 2/3 only the edge 4-5 (length 3).
    triangles = np.array([[0, 1, 2], [1, 0, 3], [4, 5, 6], [5, 4, 7]], np.int32)
    texture = np.zeros((4, 4, 3), np.float32)
    texture[:, :2, 0] = 1.0  # u < 0.5 red, u > 0.5 black
    uvs = np.array([
        [[0.1, 0.1], [0.2, 0.1], [0.1, 0.2]],  # red side
        [[0.9, 0.1], [0.8, 0.1], [0.8, 0.2]],  # black side: the edge 0-1 jumps by 1
        [[0.1, 0.5], [0.2, 0.5], [0.1, 0.6]],
        [[0.2, 0.8], [0.1, 0.8], [0.2, 0.9]],  # red too: the edge 4-5 does not jump
    ], np.float32)
    score = seam_mismatch(texture, positions, triangles, uvs)
    assert score["edges"] == 2
    assert abs(score["mean"] - 0.25) < 1e-5 and abs(score["max"] - 1.0) < 1e-5


def test_the_seams_table_names_the_command_that_reproduces_it():
    from nfsd.bench.seams import build_parser, reproducing_command

    parser = build_parser()
    argv = ["--seeds", "2", "--prompts", "red and white stripes", "blue dots on yellow", "--meshes", "cube"]
    assert reproducing_command(parser.parse_args(argv), parser) == (
        'nfsd bench seams --seeds 2 --steps 300 --meshes cube --prompts "red and white stripes" "blue dots on yellow"')
    assert reproducing_command(parser.parse_args([]), parser) == "nfsd bench seams --seeds 2 --steps 300"
