"""Synthetic defects pasted into images, each with the mask of the pixels it changed.

Three kinds, after the industrial anomaly-detection literature:

  cutpaste  a rectangle cut from another image and pasted at a random place
            (CutPaste, Li et al. 2021);
  stroke    a thin line or arc of ink (a quadratic Bezier curve) drawn across
            the digit, as a scratch or a stray pen stroke;
  blob      a smooth noise blob (a thresholded Perlin noise mask, as in DRAEM,
            Zavrtanik et al. 2021) filled with ink or with a noise texture,
            blended over the image.

Images are float32 in [0, 1], shape (H, W, C), with light ink on a dark ground
as MNIST has (ink is 1 in every channel). A defect's mask holds exactly the
pixels it changed: changes smaller than `CHANGE_TOLERANCE` (in any channel) are
undone rather than left unmasked, and a draw that changes fewer than
`MIN_DEFECT_PIXELS` pixels (a background patch pasted on background, a blob
of ink over ink) is drawn again. Every defect comes from its own generator,
`numpy.random.default_rng([seed, index])`: the same images and seed give the
same set, and a stroke or blob depends only on its image, the seed and the
index (a CutPaste also on the donors).
"""

import numpy as np

KINDS = ("cutpaste", "stroke", "blob")
# A pixel changed by less than this (on the [0, 1] scale) is left as it was: a change that
# small is not a visible defect, and a mask must not claim pixels that did not change.
CHANGE_TOLERANCE = 0.1
MIN_DEFECT_PIXELS = 4
MAX_DRAWS = 200
PATCH_SIDES = (4, 10)            # CutPaste rectangle sides, in pixels (inclusive)
STROKE_WIDTHS = (1.0, 2.2)       # stroke width, in pixels
BLOB_AREA_SHARES = (0.04, 0.14)  # blob area, as a share of the image
PERLIN_PERIODS = (1, 2, 3, 4)    # noise cells per side of the blob masks


def perlin_noise(shape, periods, rng):
    """2-D gradient (Perlin) noise of `shape` (H, W) with `periods` (rows, columns) lattice
    cells, in about [-0.7, 0.7]; DRAEM's `rand_perlin_2d` without its divisibility rule."""
    height, width = shape
    rows, columns = periods
    angles = rng.uniform(0, 2 * np.pi, (rows + 1, columns + 1))
    gradients = np.stack([np.cos(angles), np.sin(angles)], axis=-1)   # (rows + 1, columns + 1, 2)
    y = (np.arange(height) + 0.5) * rows / height
    x = (np.arange(width) + 0.5) * columns / width
    y, x = np.meshgrid(y, x, indexing="ij")                           # (H, W) lattice coordinates
    cell_y, cell_x = np.floor(y).astype(int), np.floor(x).astype(int)
    offset_y, offset_x = y - cell_y, x - cell_x

    def corner(dy, dx):
        gradient = gradients[cell_y + dy, cell_x + dx]
        return gradient[..., 0] * (offset_y - dy) + gradient[..., 1] * (offset_x - dx)

    def fade(t):
        return t * t * t * (t * (6 * t - 15) + 10)

    fade_y, fade_x = fade(offset_y), fade(offset_x)
    top = corner(0, 0) + fade_x * (corner(0, 1) - corner(0, 0))
    bottom = corner(1, 0) + fade_x * (corner(1, 1) - corner(1, 0))
    return top + fade_y * (bottom - top)


def cut_paste(image, donor, rng):
    """A rectangle of `donor` pasted into `image` at a random place: (defective, None)."""
    height, width = image.shape[:2]
    patch_height, patch_width = rng.integers(PATCH_SIDES[0], PATCH_SIDES[1] + 1, size=2)
    source_y, source_x = (rng.integers(0, height - patch_height + 1),
                          rng.integers(0, width - patch_width + 1))
    target_y, target_x = (rng.integers(0, height - patch_height + 1),
                          rng.integers(0, width - patch_width + 1))
    defective = image.copy()
    defective[target_y:target_y + patch_height, target_x:target_x + patch_width] = donor[
        source_y:source_y + patch_height, source_x:source_x + patch_width]
    return defective


def stroke(image, rng):
    """A thin anti-aliased arc of ink (a quadratic Bezier curve) through the digit's middle."""
    height, width = image.shape[:2]
    ink = image.max(axis=-1)
    rows, columns = np.nonzero(ink > 0.5)
    centre = (np.array([rows.mean(), columns.mean()]) if len(rows)
              else np.array([height / 2, width / 2]))
    start, end = (rng.uniform(0, 1, 2) * (height, width) for _ in range(2))
    control = centre + rng.normal(0, 3, 2)
    t = np.linspace(0, 1, 120)[:, None]
    curve = (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t ** 2 * end   # (120, 2)
    pixel_y, pixel_x = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5,
                                   indexing="ij")
    distance = np.sqrt((pixel_y[..., None] - curve[:, 0]) ** 2
                       + (pixel_x[..., None] - curve[:, 1]) ** 2).min(axis=-1)   # (H, W)
    half_width = rng.uniform(*STROKE_WIDTHS) / 2
    strength = rng.uniform(0.7, 1.0)
    coverage = np.clip(half_width + 0.5 - distance, 0.0, 1.0) * strength
    return np.maximum(image, coverage[..., None]).astype(image.dtype)


def blob(image, rng):
    """A Perlin blob blended over the image, filled with ink or with a noise texture."""
    height, width = image.shape[:2]
    noise = perlin_noise((height, width), rng.choice(PERLIN_PERIODS, size=2), rng)
    share = rng.uniform(*BLOB_AREA_SHARES)
    region = noise > np.quantile(noise, 1 - share)
    if rng.random() < 0.5:
        fill = np.full((height, width), rng.uniform(0.6, 1.0))
    else:
        texture = perlin_noise((height, width), rng.integers(5, 10, size=2), rng)
        fill = (texture - texture.min()) / (np.ptp(texture) + 1e-12)
    # DRAEM's blend: the fill over the image with opacity 1 - beta, beta in [0, 0.5] here.
    opacity = 1 - rng.uniform(0, 0.5)
    blended = image * (1 - opacity) + fill[..., None] * opacity
    return np.where(region[..., None], blended, image).astype(image.dtype)


def make_defect(kind, image, donors, rng, exclude=None):
    """One defect of `kind` in `image` (H, W, C): `(defective image, mask (H, W) bool)`.

    `donors` (M, H, W, C) are the images CutPaste cuts from, all but the one at
    index `exclude` (the image itself, when it is among them). Draws again until
    the defect changes at least `MIN_DEFECT_PIXELS` pixels by `CHANGE_TOLERANCE`.

    Raises:
        ValueError: for an unknown kind, or when no draw changes enough pixels
            (a blank image and blank donors, say).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown defect kind {kind!r}: choose from {', '.join(KINDS)}")
    for _ in range(MAX_DRAWS):
        if kind == "cutpaste":
            donor = rng.integers(len(donors) - (exclude is not None))
            donor += exclude is not None and donor >= exclude
            defective = cut_paste(image, donors[donor], rng)
        elif kind == "stroke":
            defective = stroke(image, rng)
        else:
            defective = blob(image, rng)
        defective = np.clip(defective, 0.0, 1.0)
        mask = (np.abs(defective - image) >= CHANGE_TOLERANCE).any(axis=-1)
        if mask.sum() >= MIN_DEFECT_PIXELS:
            return np.where(mask[..., None], defective, image).astype(image.dtype), mask
    raise ValueError(f"no {kind} defect changed {MIN_DEFECT_PIXELS} pixels in {MAX_DRAWS} draws")


def defect_set(images, seed=0, kinds=KINDS, donors=None):
    """A defect in each of `images` (N, H, W, C), the kinds taken in turn.

    Image `i` gets kind `kinds[i % len(kinds)]`, drawn by `default_rng([seed, i])`.
    CutPaste cuts from `donors` (default: `images`), never from the image itself
    when the donors are the images.

    Returns:
        `(defective (N, H, W, C) float32, masks (N, H, W) bool, kinds (N,) str)`.
    """
    images = np.asarray(images, dtype="float32")
    donors = images if donors is None else np.asarray(donors, dtype="float32")
    defective, masks, names = np.empty_like(images), np.zeros(images.shape[:3], bool), []
    for index, image in enumerate(images):
        kind = kinds[index % len(kinds)]
        rng = np.random.default_rng([seed, index])
        exclude = index if donors is images and len(images) > 1 else None
        defective[index], masks[index] = make_defect(kind, image, donors, rng, exclude)
        names.append(kind)
    return defective, masks, np.array(names)
