"""Tissue classes of the unseen CT phantom, their Hounsfield units per contrast phase, and the
scanner model that turns a class volume into an int16 CT image.

Why a phase is a lookup table: the enhancement of every structure depends on the moment of the scan
(corticomedullary: bright cortex, dark medulla, dense arteries; nephrographic: cortex and medulla
closer together, veins as bright as arteries). Drawing the table per case varies all of them at once,
consistently. The scanner adds a smooth per-tissue texture, partial-volume blur and correlated noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from ._ct_canvas import Canvas
from ._filters import smooth_121, upsample_linear
from ._noise import bspline_field

__all__ = ["Tissue", "CAVITY_FAT", "SOFT", "Contrast", "draw_contrast", "synthesize_ct"]


class Tissue(IntEnum):
    AIR = 0
    TABLE_FOAM = 1
    TABLE_SHELL = 2
    SKIN = 3
    SUBCUT_FAT = 4
    WALL_MUSCLE = 5
    VISCERAL_FAT = 6
    RETRO_FAT = 7
    PERIRENAL_FAT = 8
    MUSCLE = 9
    CORTICAL_BONE = 10
    CANCELLOUS_BONE = 11
    DISC = 12
    CSF = 13
    LUNG = 14
    LIVER = 15
    SPLEEN = 16
    GALLBLADDER = 17
    ARTERIAL_BLOOD = 18
    CALCIFICATION = 19
    CAVAL_BLOOD = 20
    RENAL_VEIN_BLOOD = 21
    PORTAL_BLOOD = 22
    RENAL_ARTERY = 23  # labelled: artery
    MEDULLA = 24  # labelled: medulla
    CORTEX = 25  # labelled: cortex
    SINUS_FAT = 26
    URINE = 27
    BOWEL_WALL = 28
    BOWEL_FLUID = 29
    BOWEL_GAS = 30
    ORAL_CONTRAST = 31
    STOOL = 32


# the fat inside the abdominal wall: what organs, vessels and bowel may displace
CAVITY_FAT = frozenset({Tissue.VISCERAL_FAT, Tissue.RETRO_FAT})
SOFT = CAVITY_FAT | {Tissue.WALL_MUSCLE, Tissue.MUSCLE, Tissue.PERIRENAL_FAT}


@dataclass(frozen=True)
class Contrast:
    """One case's contrast phase: its name, the mean HU of every class and each class's texture strength."""

    phase: str
    mean: np.ndarray  # (256,) float32, HU by class
    texture: np.ndarray  # (256,) float32, HU standard deviation of the smooth texture by class

    def level(self, tissue: Tissue) -> float:
        return float(self.mean[int(tissue)])


def draw_contrast(rng: np.random.Generator) -> Contrast:
    """A contrast phase and its enhancement levels (ranges of contrast-enhanced abdominal CT)."""
    u = rng.uniform
    phase = "corticomedullary" if rng.random() < 0.5 else "nephrographic"
    fat = u(-115, -85)
    muscle = u(40, 60)
    mean = {
        Tissue.AIR: -1000.0, Tissue.TABLE_FOAM: u(-900, -750), Tissue.TABLE_SHELL: u(100, 300),
        Tissue.SKIN: u(20, 60), Tissue.SUBCUT_FAT: fat, Tissue.VISCERAL_FAT: fat + u(-5, 8),
        Tissue.RETRO_FAT: fat + u(-5, 5), Tissue.PERIRENAL_FAT: fat + u(-5, 10), Tissue.SINUS_FAT: fat + u(0, 25),
        Tissue.MUSCLE: muscle, Tissue.WALL_MUSCLE: muscle + u(-6, 6),
        Tissue.CORTICAL_BONE: u(700, 1200), Tissue.CANCELLOUS_BONE: u(170, 320), Tissue.DISC: u(70, 110),
        Tissue.CSF: u(0, 15), Tissue.LUNG: u(-880, -800), Tissue.GALLBLADDER: u(0, 20), Tissue.URINE: u(0, 20),
        Tissue.CALCIFICATION: u(450, 900), Tissue.BOWEL_FLUID: u(5, 25), Tissue.BOWEL_GAS: u(-990, -900),
        Tissue.ORAL_CONTRAST: u(180, 320), Tissue.STOOL: u(-120, -20),
    }
    if phase == "corticomedullary":
        arterial = u(200, 300)
        cortex = min(u(150, 230), arterial - 20)
        medulla = u(55, 100)
        mean.update({Tissue.LIVER: u(65, 90), Tissue.SPLEEN: u(100, 140), Tissue.CAVAL_BLOOD: u(70, 110),
                     Tissue.RENAL_VEIN_BLOOD: u(140, 190), Tissue.PORTAL_BLOOD: u(110, 160),
                     Tissue.BOWEL_WALL: u(60, 90)})
        spleen_texture = u(14, 28)  # arciform enhancement of the early phase
    else:
        arterial = u(140, 190)
        cortex = u(140, 195)
        medulla = cortex - u(35, 70)
        mean.update({Tissue.LIVER: u(100, 130), Tissue.SPLEEN: u(105, 130), Tissue.CAVAL_BLOOD: u(130, 170),
                     Tissue.RENAL_VEIN_BLOOD: u(130, 170), Tissue.PORTAL_BLOOD: u(140, 180),
                     Tissue.BOWEL_WALL: u(70, 100)})
        spleen_texture = u(3, 6)
    mean.update({Tissue.ARTERIAL_BLOOD: arterial, Tissue.RENAL_ARTERY: arterial, Tissue.CORTEX: cortex,
                 Tissue.MEDULLA: medulla})
    texture = {Tissue.SUBCUT_FAT: 6, Tissue.VISCERAL_FAT: 8, Tissue.RETRO_FAT: 6, Tissue.PERIRENAL_FAT: 6,
               Tissue.SINUS_FAT: 10, Tissue.MUSCLE: 6, Tissue.WALL_MUSCLE: 6, Tissue.CANCELLOUS_BONE: 45,
               Tissue.CORTICAL_BONE: 70, Tissue.LUNG: 25, Tissue.LIVER: 6, Tissue.SPLEEN: spleen_texture,
               Tissue.CORTEX: 5, Tissue.MEDULLA: 5, Tissue.STOOL: 70, Tissue.BOWEL_FLUID: 4,
               Tissue.ORAL_CONTRAST: 25, Tissue.DISC: 6}
    mean_table = np.zeros(256, dtype=np.float32)
    texture_table = np.full(256, 3.0, dtype=np.float32)
    for tissue, value in mean.items():
        mean_table[int(tissue)] = value
    for tissue, value in texture.items():
        texture_table[int(tissue)] = value
    texture_table[int(Tissue.AIR)] = 0.0
    return Contrast(phase=phase, mean=mean_table, texture=texture_table)


def synthesize_ct(canvas: Canvas, contrast: Contrast, rng: np.random.Generator, *, noise_sd: float,
                  blur_xy: float, blur_z: float, texture_mm: float = 12.0) -> np.ndarray:
    """The int16 CT image of the painted canvas: class means, smooth texture, local adjustments,
    partial-volume blur (3-tap weights ``blur_xy``/``blur_z``) and in-plane correlated noise of
    standard deviation ``noise_sd`` HU."""
    tissue = canvas.tissue
    nz, ny, nx = tissue.shape
    sx, sy, sz = canvas.spacing
    intervals = (max(1, int(nz * sz / (2 * texture_mm))), max(1, int(ny * sy / texture_mm)),
                 max(1, int(nx * sx / texture_mm)))
    # the texture is smooth on a scale of texture_mm: computed at half the in-plane resolution, then doubled
    texture = bspline_field(rng, (nz, (ny + 1) // 2, (nx + 1) // 2), intervals)
    texture = upsample_linear(upsample_linear(texture, 1, ny), 2, nx)
    hu = contrast.mean[tissue]
    texture *= contrast.texture[tissue]
    hu += texture
    del texture
    for slices, delta in canvas.adjustments:
        hu[slices] += delta
    hu = smooth_121(smooth_121(smooth_121(hu, 2, blur_xy), 1, blur_xy), 0, blur_z)
    # correlated quantum noise: each voxel sums the white noise of a 2 × 2 in-plane neighbourhood
    white = rng.standard_normal((nz, ny + 1, nx + 1), dtype=np.float32)
    white *= np.float32(noise_sd / 2.0)
    hu += white[:, :-1, :-1]
    hu += white[:, 1:, :-1]
    hu += white[:, :-1, 1:]
    hu += white[:, 1:, 1:]
    del white
    np.clip(hu, -1024, 3071, out=hu)
    return np.rint(hu).astype(np.int16)
