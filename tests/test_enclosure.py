"""The N0D3 Pi 5 enclosure: real OpenSCAD renders of enclosures/, checked as meshes.

Each printed part must print (watertight, one body, flat on a 220 mm bed), and the assembled
case must hold a Pi 5 with its Active Cooler: nothing collides, the standoffs sit on the hole
pattern, every plug has a clear way in, and lid/base and stacked cases meet with the set
tolerance. The same checks run again on a case rendered with other settings.

Renders of the unchanged sources are cached by content hash (M3SHD_RENDER_CACHE, default
/var/tmp/m3shd-enclosure-renders), so a clean machine renders once; the changed-settings case
always renders.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import manifold3d as mf
import numpy as np
import pytest
import trimesh

OPENSCAD = shutil.which("openscad")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.render,
    pytest.mark.skipif(OPENSCAD is None, reason="needs openscad (Debian: apt install openscad; macOS: brew install --cask openscad)"),
]

ENCLOSURES = Path(__file__).resolve().parent.parent / "enclosures"
CACHE = Path(os.environ.get("M3SHD_RENDER_CACHE", "/var/tmp/m3shd-enclosure-renders"))

# From the Raspberry Pi 5 mechanical drawing, independent of enclosures/pi5.scad.
PI5_BOARD = (85.0, 56.0)
PI5_HOLES = [(3.5, 3.5), (3.5, 52.5), (61.5, 3.5), (61.5, 52.5)]
BED = 220.0
TOUCHING = 1e-3           # mm³: faces that only touch (PCB on standoffs) overlap in no more
MIN_GAP = 0.15            # mm between the case and any part on the board (0.2 nominal, less polygon facets)
CHANGED = {"wall": 3.2, "tol": 0.4, "fastener": '"insert"', "node_number": 7}
PARTS = ("base", "lid")
M25 = 2.5                 # mm, an M2.5 screw's thread
FACING = {"-y": -90, "+x": 0, "-x": 180}   # port edge -> outward direction, degrees


# ---- Rendering --------------------------------------------------------------------------

def openscad(scad: str, out: Path, defines: dict) -> str:
    """Renders enclosures/<scad> to `out`; returns OpenSCAD's log (its echo lines included)."""
    argv = [OPENSCAD, "--hardwarnings", "-o", str(out), *(f"-D{k}={v}" for k, v in sorted(defines.items())),
            str(ENCLOSURES / scad)]
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if done.returncode != 0 or not out.exists():
        raise AssertionError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr}")
    print(f"rendered {scad} {defines or ''} in {time.monotonic() - started:.1f} s")
    return done.stderr


def source_hash(scad: str, defines: dict) -> str:
    digest = hashlib.sha256(subprocess.run([OPENSCAD, "--version"], capture_output=True, text=True).stderr.encode())
    for path in sorted(ENCLOSURES.glob("*.scad")):
        digest.update(path.name.encode() + path.read_bytes())
    digest.update(json.dumps([scad, defines], sort_keys=True).encode())
    return digest.hexdigest()[:32]


def render(scad: str, defines: dict, workdir: Path, cached: bool) -> tuple[Path, str]:
    if not cached:
        out = workdir / scad.replace(".scad", ".stl")
        return out, openscad(scad, out, defines)
    entry = CACHE / source_hash(scad, defines)
    if not (entry / "part.stl").exists():
        entry.mkdir(parents=True, exist_ok=True)
        log = openscad(scad, entry / "part.tmp.stl", defines)
        (entry / "log.txt").write_text(log)
        (entry / "part.tmp.stl").rename(entry / "part.stl")   # only a whole render counts as cached
    return entry / "part.stl", (entry / "log.txt").read_text()


def echoes(log: str) -> dict:
    """`echo(name = value)` lines from case.scad's report(), values parsed as JSON."""
    return {m[1]: json.loads(m[2]) for m in re.finditer(r"^ECHO: (\w+) = (.*)$", log, re.M)}


# ---- Meshes -----------------------------------------------------------------------------

def solid(mesh: trimesh.Trimesh) -> mf.Manifold:
    made = mf.Manifold(mf.Mesh(vert_properties=np.asarray(mesh.vertices, np.float32),
                               tri_verts=np.asarray(mesh.faces, np.uint32)))
    assert made.status() == mf.Error.NoError, f"not a closed manifold solid: {made.status()}"
    return made


def overlap(a: mf.Manifold, b: mf.Manifold) -> float:
    return (a ^ b).volume()


@dataclass
class Port:
    """One row of the `ports` table in enclosures/pi5.scad."""
    name: str
    edge: str
    along: float
    z0: float
    body_w: float
    body_h: float
    depth: float
    overhang: float
    plug_w: float
    plug_h: float

    @property
    def centre_z(self) -> float:
        return self.z0 + self.body_h / 2

    @property
    def opening(self) -> tuple[float, float]:
        return max(self.body_w, self.plug_w), max(self.body_h, self.plug_h)

    def box(self, x0: float, x1: float, size: tuple[float, float]) -> mf.Manifold:
        """A box in the port's frame (x outward from the board edge) centred on the connector."""
        width, height = size
        origin = {"-y": (self.along, 0.0), "+x": (PI5_BOARD[0], self.along), "-x": (0.0, self.along)}[self.edge]
        box = mf.Manifold.cube([x1 - x0, width, height]).translate([x0, -width / 2, self.centre_z - height / 2])
        return box.rotate([0, 0, FACING[self.edge]]).translate([origin[0], origin[1], 0])


def loops(section: mf.CrossSection) -> list[tuple[np.ndarray, float]]:
    """Centroid and equivalent diameter of each closed loop in a slice."""
    found = []
    for points in section.to_polygons():
        x, y = points[:, 0], points[:, 1]
        cross = x * np.roll(y, -1) - np.roll(x, -1) * y
        area = cross.sum() / 2
        centre = np.array([((x + np.roll(x, -1)) * cross).sum(), ((y + np.roll(y, -1)) * cross).sum()]) / (6 * area)
        found.append((centre, 2 * np.sqrt(abs(area) / np.pi)))
    return found


def centres_of(section: mf.CrossSection, diameter: float) -> list[np.ndarray]:
    return [centre for centre, d in loops(section) if abs(d - diameter) < 0.3]


@dataclass
class Case:
    printed: dict          # part -> trimesh in its print pose, as the STL says
    placed: dict           # part -> manifold in the board frame (assembled)
    envelope: mf.Manifold  # PCB, components and cooler, board frame
    data: dict             # case.scad's report()

    @property
    def tol(self) -> float:
        return self.data["tol"]

    @property
    def ports(self) -> list[Port]:
        return [Port(*row) for row in self.data["ports"]]

    def shell(self) -> mf.Manifold:
        return self.placed["base"] + self.placed["lid"]


def build_case(defines: dict, workdir: Path, cached: bool) -> Case:
    printed, placed, data = {}, {}, {}
    for part in PARTS:
        path, log = render(f"{part}.scad", defines, workdir, cached)
        data = echoes(log)
        mesh = trimesh.load(path, force="mesh")
        printed[part] = mesh
        pose = np.array(data[f"{part}_print_matrix"], float)
        placed[part] = solid(mesh.copy().apply_transform(np.linalg.inv(pose)))
    # The envelope does not depend on the case settings: always the cached default.
    path, _ = render("board_envelope.scad", {}, workdir, cached=True)
    envelope = solid(trimesh.load(path, force="mesh"))
    return Case(printed, placed, envelope, data)


@pytest.fixture(scope="module")
def default_case(tmp_path_factory) -> Case:
    return build_case({}, tmp_path_factory.mktemp("default"), cached=True)


@pytest.fixture(scope="module")
def changed_case(tmp_path_factory) -> Case:
    return build_case(CHANGED, tmp_path_factory.mktemp("changed"), cached=False)


@pytest.fixture(scope="module", params=["default", "changed"])
def case(request) -> Case:
    return request.getfixturevalue(f"{request.param}_case")


# ---- Each part prints -------------------------------------------------------------------

@pytest.mark.parametrize("part", PARTS)
def test_each_part_is_a_printable_solid(case, part):
    mesh = case.printed[part]
    assert mesh.is_watertight, f"{part}: open edges"
    assert mesh.is_winding_consistent, f"{part}: inconsistent winding"
    assert len(case.placed[part].decompose()) == 1, f"{part}: more than one body"
    assert mesh.volume > 0 and case.placed[part].volume() == pytest.approx(mesh.volume, rel=1e-3)
    lo, hi = mesh.bounds
    assert lo[2] == pytest.approx(0, abs=1e-6), f"{part}: not standing on the bed (z from {lo[2]})"
    assert max(hi[:2] - lo[:2]) <= BED and hi[2] <= BED, f"{part}: {hi - lo} does not fit a 220 mm bed"
    # Prints without supports from a large flat face: the floor for the base, the top for the lid.
    on_bed = np.all(np.abs(mesh.vertices[mesh.faces][:, :, 2]) < 1e-6, axis=1) & (mesh.face_normals[:, 2] < -0.99)
    footprint = mesh.area_faces[on_bed].sum()
    assert footprint > 0.7 * (hi[0] - lo[0]) * (hi[1] - lo[1]), f"{part}: only {footprint:.0f} mm² on the bed"


# ---- The board fits ---------------------------------------------------------------------

def test_board_and_cooler_do_not_touch_the_case(case):
    collision = overlap(case.envelope, case.shell())
    assert collision < TOUCHING, f"{collision:.2f} mm³ of board, parts or cooler inside the case walls"


def test_parts_on_the_board_keep_clear_of_the_case(case):
    """Only the PCB touches the case (clamped at its holes); every part on it keeps a gap."""
    pcb = mf.Manifold.cube([PI5_BOARD[0] + 10, PI5_BOARD[1] + 10, 1.5]).translate([-5, -5, 0])
    gap = case.shell().min_gap(case.envelope - pcb, 5.0)
    assert gap >= MIN_GAP, f"a part on the board is {gap:.2f} mm from the case"


def test_only_connector_fronts_leave_the_case(case):
    """The board sits inside the case's hull; what pokes out goes through a connector opening."""
    openings = mf.Manifold.batch_boolean([port.box(0, 50, port.opening) for port in case.ports], mf.OpType.Add)
    outside = case.envelope - case.shell().hull()
    stray = (outside - openings).volume()
    assert stray < TOUCHING, f"{stray:.2f} mm³ of the board outside the case, not through an opening"


def test_standoffs_and_lid_posts_sit_on_the_hole_pattern(case):
    base, lid = case.placed["base"], case.placed["lid"]
    standoffs = centres_of(base.slice(-1.0), case.data["pad_d"])    # just under the PCB
    posts = centres_of(lid.slice(5.0), case.data["pad_d"])          # above the PCB
    for kind, centres in (("standoff", standoffs), ("lid post", posts)):
        assert len(centres) == len(PI5_HOLES), f"{len(centres)} {kind}s"
        for hole in PI5_HOLES:
            miss = min(np.linalg.norm(c - hole) for c in centres)
            assert miss <= 0.1, f"{kind} at {hole} is {miss:.3f} mm off the hole"


def test_every_port_has_a_clear_way_in(case):
    shell = case.shell()
    for port in case.ports:
        channel = port.box(port.overhang, port.overhang + 40, (port.plug_w, port.plug_h))
        assert overlap(channel, shell) < TOUCHING, f"{port.name}: the plug hits the case"
        gap = shell.min_gap(channel, 5.0)
        assert gap >= case.data["port_clearance"] - 0.01, f"{port.name}: {gap:.2f} mm around the plug"


def test_screws_pass_through_and_bite(case):
    """An M2.5 screw on each lid post clears the lid and the PCB and ends in its standoff's hole."""
    lid, base = case.placed["lid"], case.placed["base"]
    length = case.data["screw_length"]
    top = lid.bounding_box()[5]
    tip = top - length
    assert -case.data["fastener_hole_depth"] < tip < -2, f"screw tip at z = {tip} for a standoff top at 0"
    for x, y in PI5_HOLES:
        shank = mf.Manifold.cylinder(length, M25 / 2, M25 / 2, 32).translate([x, y, tip])
        assert overlap(shank, lid) < TOUCHING, f"the screw at {(x, y)} hits the lid"
        assert overlap(shank, case.envelope) < TOUCHING, f"the screw at {(x, y)} misses the PCB's hole"
        bite = overlap(shank, base)    # thread cut into the pilot hole's wall; an insert does that instead
        assert (bite > 1) == (case.data["fastener"] == "screw"), f"the screw at {(x, y)} bites {bite:.2f} mm³"


# ---- Lid on base, case on case ----------------------------------------------------------

SHIFTS = {"+x": (1, 0, 0), "-x": (-1, 0, 0), "+y": (0, 1, 0), "-y": (0, -1, 0)}


def assert_play(fixed: mf.Manifold, moving: mf.Manifold, directions: dict, play: float, what: str):
    """`moving` clears `fixed`, moves by just under `play` each way and collides just past it."""
    assert overlap(fixed, moving) < TOUCHING, f"{what}: intersect as assembled"
    for name, direction in directions.items():
        step = np.array(direction, float)
        assert overlap(fixed, moving.translate(step * (play - 0.03))) < TOUCHING, f"{what}: loose towards {name}"
        assert overlap(fixed, moving.translate(step * (play + 0.05))) > TOUCHING, f"{what}: no stop towards {name}"


def test_lid_and_base_meet_with_the_set_gap(case):
    assert_play(case.placed["base"], case.placed["lid"], {**SHIFTS, "down": (0, 0, -1)}, case.tol, "lid on base")


def test_stacked_cases_interlock_with_the_set_tolerance(case):
    lower = case.shell()
    head_d, head_h = case.data["screw_head"]
    top = lower.bounding_box()[5]
    heads = [mf.Manifold.cylinder(head_h, head_d / 2, head_d / 2, case.data["fn"]).translate([x, y, top])
             for x, y in PI5_HOLES]
    lower = mf.Manifold.batch_boolean([lower, *heads], mf.OpType.Add)
    upper = case.placed["base"].translate([0, 0, case.data["case_height"]])
    assert upper.bounding_box()[2] == pytest.approx(top, abs=1e-4), "the upper case does not rest on the lid"
    assert_play(lower, upper, SHIFTS, case.tol, "stacked cases")


# ---- Settings, sources and pictures ------------------------------------------------------

def engraved(case: Case) -> float:
    """Volume cut by the label from the lid's microSD end, between the openings and the top."""
    lid = case.placed["lid"]
    zone = mf.Manifold.cube([0.5, 46, 12]).translate([lid.bounding_box()[0], 5, 7])
    return zone.volume() - overlap(zone, lid)


def test_changed_settings_reach_the_parts(default_case, changed_case):
    grow = 2 * (CHANGED["wall"] - default_case.data["wall"])
    for part in PARTS:
        extents = changed_case.printed[part].extents - default_case.printed[part].extents
        assert extents[:2] == pytest.approx([grow, grow], abs=1e-3), part
    hole_d = changed_case.data["fastener_hole_d"]    # now heat-set inserts, wider than screw pilots
    assert hole_d > default_case.data["fastener_hole_d"]
    assert len(centres_of(changed_case.placed["base"].slice(-2.0), hole_d)) == len(PI5_HOLES)
    assert engraved(changed_case) > 1.3 * engraved(default_case) > 5, "the lid should now say N0D3-07"


def test_impossible_settings_are_refused_with_a_reason(tmp_path):
    done = subprocess.run([OPENSCAD, "--hardwarnings", "-o", str(tmp_path / "x.stl"), "-Dscrew_length=16",
                           str(ENCLOSURES / "base.scad")], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "use a longer screw" in done.stderr


@pytest.mark.parametrize("part", PARTS)
def test_committed_stls_match_the_sources(default_case, part):
    committed = trimesh.load(ENCLOSURES / "stl" / f"{part}.stl", force="mesh")
    fresh = default_case.printed[part]
    stale = ("is stale: run `make -C enclosures` and commit stl/ and png/ (or OpenSCAD fell back to another"
             " font for the label: install Liberation Sans, Debian's fonts-liberation2)")
    assert committed.volume == pytest.approx(fresh.volume, rel=1e-4), f"stl/{part}.stl {stale}"
    assert np.allclose(committed.bounds, fresh.bounds, atol=0.01), f"stl/{part}.stl {stale}"


def png_facts(path: Path) -> tuple[int, int, int]:
    """Width, height and compressed pixel bytes of a PNG file."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    pixels, at = 0, 8
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        pixels += length if kind == b"IDAT" else 0
        at += 12 + length
    return width, height, pixels


def test_make_draws_the_previews(default_case, tmp_path):
    if not shutil.which("make"):
        pytest.skip("needs make (Debian: apt install make)")
    if sys.platform == "linux" and not (os.environ.get("DISPLAY") or shutil.which("xvfb-run")):
        pytest.skip("OpenSCAD on Linux draws pictures on an X display: needs xvfb-run (Debian: apt install xvfb xauth)")
    # Give make the parts rendered above, newer than their sources: it draws only the pictures.
    for scad, target in (("base.scad", "stl/base.stl"), ("lid.scad", "stl/lid.stl"),
                         ("board_envelope.scad", "build/board_envelope.stl")):
        (tmp_path / target).parent.mkdir(exist_ok=True)
        shutil.copy(render(scad, {}, tmp_path, cached=True)[0], tmp_path / target)
    done = subprocess.run(["make", "-C", str(ENCLOSURES), f"OUT={tmp_path}", "png"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not re.search(r"rendering \S*\.stl", done.stdout), done.stdout
    for view in ("base", "lid", "assembly", "tower"):
        width, height, pixels = png_facts(tmp_path / "png" / f"{view}.png")
        assert (width, height) == (1000, 750)
        assert pixels > 8000, f"{view}.png looks blank ({pixels} bytes of pixels)"
        assert png_facts(ENCLOSURES / "png" / f"{view}.png")[:2] == (1000, 750), f"png/{view}.png"
