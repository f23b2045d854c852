"""An interactive latent-space explorer: one self-contained HTML page.

    write_explorer("runs/vae/explorer.html", latents, labels, sprite, grid_x, grid_y, title)

The page shows the test images' 2-D latent codes as a scatter coloured by class
(the same "rainbow" colours as the PNG plots) and, beside it, the image the
decoder draws at the latent point under the mouse pointer. The decoder is not
run in the browser: its images over a grid of the latent plane are computed in
Python and embedded as one PNG "sprite" (grayscale or RGB, any image size), and
the page shows the cell of the grid point nearest to the pointer.

Everything is inline (script, style, data, the sprite as a data: URI), so the
file opens from disk (file://) with no server and no network; a
Content-Security-Policy in the page forbids any outside request.

The page itself (markup, style and script) is `explorer_template.html`, beside
this module; `string.Template` fills its `$name` placeholders.

For tests, the preview canvas (id "decoded") carries `data-cell="row,col"` of
the cell it shows, and the page keeps `window.explorerState`.
"""

import base64
import html
import io
import json
import math
import pathlib
import string

import matplotlib.colors
import numpy as np
from PIL import Image

import atomic_files
import plots

# Found beside this module, not in the working directory: scripts may run from anywhere.
PAGE_TEMPLATE_PATH = pathlib.Path(__file__).resolve().with_name("explorer_template.html")
PREVIEW_SIZE = 280  # CSS pixels of the preview canvas's longer side
# Latents are written with about 1/1000 of the plotted span as resolution: finer
# than a pixel of the scatter, and it keeps 10,000 points to ~150 KB of text.
LATENT_SIGNIFICANT_STEPS = 1000


def write_explorer(path, latents, labels, sprite, grid_x, grid_y, title, class_names=None,
                   class_title="digit", colormap=plots.IMAGE_COLORMAP):
    """Writes one self-contained HTML page for exploring a 2-D latent space.

    Args:
        path: output .html path; written atomically (`atomic_files.write_text`).
        latents: float array (N, 2): the test images' 2-D latent coordinates.
            Points with a non-finite coordinate are left out (the page says how many).
        labels: int array (N,): their class indices, or None for unlabelled images.
        sprite: float array (len(grid_y), len(grid_x), H, W[, C]) in [0, 1], C 1 or
            3: the decoder's image at latent point (grid_x[col], grid_y[row]).
            Row 0 is the SMALLEST grid_y, i.e. the BOTTOM of the plot: this is the
            reverse of `plots.manifold`'s picture order (top row first), so pass
            `decoded.reshape(len(grid_y), len(grid_x), H, W, C)` for a grid built
            as `[(x, y) for y in grid_y for x in grid_x]`.
        grid_x, grid_y: 1-D strictly ascending arrays of the grid's coordinates
            (at least 2 each).
        title: page title and heading (plain text; it is HTML-escaped).
        class_names: the name of each class (default: the digits 0..9).
        class_title: what a class is called in the legend ("digit" or "class").
        colormap: how grayscale images are shown, "gray_r" (ink dark on white)
            or "gray" (as they are).

    Raises:
        ValueError: if the shapes disagree, a label is not a class index, a grid
            is not ascending, or no latent point is finite.
    """
    if labels is None:  # unlabelled: one colour, one legend entry
        labels, class_names, class_title = np.zeros(len(latents), "int64"), ["test image"], ""
    latents, labels, sprite, grid_x, grid_y = _checked_inputs(latents, labels, sprite,
                                                              grid_x, grid_y, class_names)
    class_names = class_names or [str(digit) for digit in range(10)]
    cell_height, cell_width = sprite.shape[2:4]
    finite = np.isfinite(latents).all(axis=1)
    dropped_count = int((~finite).sum())
    latents, labels = latents[finite], labels[finite]

    # Draw order shuffled (same seed as plots.latent_scatter), so no digit's
    # points are all painted over the others'.
    order = np.random.default_rng(0).permutation(len(labels))
    latents, labels = latents[order], labels[order]

    page_data = {
        "latents": _rounded_latents(latents),
        # One character per point, chr(48 + class): a compact label list for 10,000 points
        # ("0".."9" for the digits).
        "labels": "".join(chr(48 + label) for label in labels.tolist()),
        "gridX": [float(value) for value in grid_x],
        "gridY": [float(value) for value in grid_y],
        "xRange": _axis_range(latents[:, 0], grid_x),
        "yRange": _axis_range(latents[:, 1], grid_y),
        "classColors": _class_colors_hex(len(class_names)),
        "classNames": list(class_names),
        "classTitle": class_title,
        "cellWidth": int(cell_width),
        "cellHeight": int(cell_height),
        "droppedCount": dropped_count,
        "sprite": "data:image/png;base64,"
                  + base64.b64encode(_sprite_png_bytes(sprite, colormap)).decode("ascii"),
    }
    noun = "digit" if class_title == "digit" else "image"
    atomic_files.write_text(path, _filled_page(page_data, title, len(labels), noun))


def _checked_inputs(latents, labels, sprite, grid_x, grid_y, class_names):
    """The inputs as NumPy arrays; raises ValueError with the problem if they disagree."""
    latents = np.asarray(latents, dtype="float64")
    labels = np.asarray(labels)
    sprite = np.asarray(sprite, dtype="float64")
    grid_x = np.asarray(grid_x, dtype="float64")
    grid_y = np.asarray(grid_y, dtype="float64")
    if latents.ndim != 2 or latents.shape[1] != 2:
        raise ValueError(f"latents must have shape (N, 2), got {latents.shape}")
    if labels.shape != (len(latents),):
        raise ValueError(f"labels must have shape ({len(latents)},) to match the latents, "
                         f"got {labels.shape}")
    count = len(class_names) if class_names else 10
    if labels.size and (not np.issubdtype(labels.dtype, np.integer)
                        or labels.min() < 0 or labels.max() >= count):
        raise ValueError("labels must be integer digits 0..9" if class_names is None else
                         f"labels must be integer class indices 0..{count - 1}")
    for name, grid in (("grid_x", grid_x), ("grid_y", grid_y)):
        if grid.ndim != 1 or len(grid) < 2 or not np.all(np.diff(grid) > 0):
            raise ValueError(f"{name} must be a 1-D strictly ascending array of at least 2 "
                             f"finite values, got shape {grid.shape}")
    if sprite.ndim == 4:
        sprite = sprite[..., np.newaxis]
    if sprite.ndim != 5 or sprite.shape[:2] != (len(grid_y), len(grid_x)) \
            or sprite.shape[-1] not in (1, 3):
        raise ValueError(f"sprite must have shape (len(grid_y), len(grid_x), height, width[, 1 "
                         f"or 3]) = ({len(grid_y)}, {len(grid_x)}, ...), got {sprite.shape}")
    if not np.isfinite(latents).all(axis=1).any():
        raise ValueError("no latent point has finite coordinates: nothing to plot")
    return latents, labels.astype("int64"), sprite, grid_x, grid_y


def _axis_range(values, grid):
    """[low, high] of one scatter axis: all points and the whole decoded grid, padded 4%."""
    low = min(float(values.min()), float(grid[0]))
    high = max(float(values.max()), float(grid[-1]))
    padding = 0.04 * (high - low)
    return [low - padding, high + padding]


def _rounded_latents(latents):
    """Latents as a flat [x0, y0, x1, y1, ...] list, rounded to ~1/1000 of their span.

    Rounding relative to the span (not to a fixed number of decimals) keeps the
    file small for an AE whose codes span hundreds and precise for a VAE whose
    means span a few units.
    """
    span = float(np.ptp(latents)) or 1.0
    decimals = max(0, math.ceil(math.log10(LATENT_SIGNIFICANT_STEPS / span)))
    rounded = np.round(latents, decimals).ravel().tolist()
    # Integers print without ".0", which saves two characters per value.
    return [int(value) if decimals == 0 else value for value in rounded]


def _class_colors_hex(count):
    """The class colours of the PNG scatter plots, as CSS "#rrggbb" strings."""
    return [matplotlib.colors.to_hex(color, keep_alpha=False)
            for color in plots.class_colors(count)]


def _sprite_png_bytes(sprite, colormap):
    """PNG bytes of all cells tiled in one 8-bit image (grayscale or RGB).

    Cell (row, col) of height H and width W occupies pixels [row * H, row * H + H)
    x [col * W, col * W + W), so the PNG's top row of cells is grid row 0, the
    smallest grid_y. Grayscale values are inverted here for the "gray_r"
    colormap (ink 1.0 -> black), so the page draws the sprite as it is and
    matches the PNG figures.
    """
    pixels = np.clip(np.nan_to_num(plots.tile(sprite), nan=0.0), 0.0, 1.0)
    if pixels.shape[-1] == 1:
        pixels = pixels[..., 0]  # a 2-D uint8 array becomes a one-channel ("L") image
        if colormap == "gray_r":
            pixels = 1.0 - pixels
    levels = np.round(255.0 * pixels).astype("uint8")
    buffer = io.BytesIO()
    # optimize: the smallest file Pillow can write; the sprite is most of the page's size.
    Image.fromarray(levels).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _filled_page(page_data, title, point_count, noun):
    """The page template with its placeholders filled: the whole HTML page as a string.

    `string.Template` rather than `str.format`: the CSS and JavaScript are full
    of braces, and none of them uses "$" (a "$" there must be written "$$").
    Unlike a chain of `str.replace`, it fills every placeholder in one pass, so
    a "$name" in the title stays text; and `substitute` raises KeyError if the
    template has a placeholder that is not filled here.
    """
    rows, columns = len(page_data["gridY"]), len(page_data["gridX"])
    # The preview keeps the images' aspect ratio, its longer side PREVIEW_SIZE pixels.
    longer = max(page_data["cellWidth"], page_data["cellHeight"])
    preview_width = round(PREVIEW_SIZE * page_data["cellWidth"] / longer)
    preview_height = round(PREVIEW_SIZE * page_data["cellHeight"] / longer)
    dropped = page_data["droppedCount"]
    dropped_note = (f" ({dropped:,} with non-finite coordinates left out)" if dropped else "")
    page_template = string.Template(PAGE_TEMPLATE_PATH.read_text(encoding="utf-8"))
    return page_template.substitute(
        title=html.escape(title),
        point_count=f"{point_count:,}",
        dropped_note=html.escape(dropped_note),
        grid_size=f"{columns} &times; {rows}",
        preview_width=str(preview_width),
        preview_height=str(preview_height),
        item=noun,
        data_json=_json_for_script_element(page_data),
    )


def _json_for_script_element(value):
    """JSON safe inside a <script> element: "</" could otherwise end the element early."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
