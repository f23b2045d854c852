"""An interactive latent-space explorer: one self-contained HTML page.

    write_explorer("runs/vae/explorer.html", latents, labels, sprite, grid_x, grid_y, title)

The page shows the test digits' 2-D latent codes as a scatter coloured by digit
(the same "rainbow" colours as the PNG plots) and, beside it, the image the
decoder draws at the latent point under the mouse pointer. The decoder is not
run in the browser: its images over a grid of the latent plane are computed in
Python and embedded as one grayscale PNG "sprite", and the page shows the cell
of the grid point nearest to the pointer.

Everything is inline (script, style, data, the sprite as a data: URI), so the
file opens from disk (file://) with no server and no network; a
Content-Security-Policy in the page forbids any outside request.

For tests, the preview canvas (id "decoded") carries `data-cell="row,col"` of
the cell it shows, and the page keeps `window.explorerState`.
"""

import base64
import html
import json
import math
import struct
import zlib

import numpy as np

import run_folder

CELL_SIZE = 28  # MNIST images are 28 x 28 pixels
PREVIEW_SCALE = 10  # the preview canvas shows one cell at 280 x 280 CSS pixels
# Latents are written with about 1/1000 of the plotted span as resolution: finer
# than a pixel of the scatter, and it keeps 10,000 points to ~150 KB of text.
LATENT_SIGNIFICANT_STEPS = 1000


def write_explorer(path, latents, labels, sprite, grid_x, grid_y, title):
    """Writes one self-contained HTML page for exploring a 2-D latent space.

    Args:
        path: output .html path; written atomically (`run_folder.write_text`).
        latents: float array (N, 2): the test images' 2-D latent coordinates.
            Points with a non-finite coordinate are left out (the page says how many).
        labels: int array (N,): their digits 0..9.
        sprite: float array (len(grid_y), len(grid_x), 28, 28) in [0, 1]: the
            decoder's image at latent point (grid_x[col], grid_y[row]).
            Row 0 is the SMALLEST grid_y, i.e. the BOTTOM of the plot: this is the
            reverse of `plots.manifold`'s picture order (top row first), so pass
            `decoded.reshape(len(grid_y), len(grid_x), 28, 28)` for a grid built
            as `[(x, y) for y in grid_y for x in grid_x]`.
        grid_x, grid_y: 1-D strictly ascending arrays of the grid's coordinates
            (at least 2 each).
        title: page title and heading (plain text; it is HTML-escaped).

    Raises:
        ValueError: if the shapes disagree, a label is not a digit 0..9, a grid
            is not ascending, or no latent point is finite.
    """
    latents, labels, sprite, grid_x, grid_y = _checked_inputs(latents, labels, sprite,
                                                              grid_x, grid_y)
    finite = np.isfinite(latents).all(axis=1)
    dropped_count = int((~finite).sum())
    latents, labels = latents[finite], labels[finite]

    # Draw order shuffled (same seed as plots.latent_scatter), so no digit's
    # points are all painted over the others'.
    order = np.random.default_rng(0).permutation(len(labels))
    latents, labels = latents[order], labels[order]

    page_data = {
        "latents": _rounded_latents(latents),
        # One character per point: a compact label list for 10,000 points.
        "labels": "".join(str(label) for label in labels.tolist()),
        "gridX": [float(value) for value in grid_x],
        "gridY": [float(value) for value in grid_y],
        "xRange": _axis_range(latents[:, 0], grid_x),
        "yRange": _axis_range(latents[:, 1], grid_y),
        "digitColors": _digit_colors_hex(),
        "cellSize": CELL_SIZE,
        "droppedCount": dropped_count,
        "sprite": "data:image/png;base64,"
                  + base64.b64encode(_sprite_png(sprite)).decode("ascii"),
    }
    run_folder.write_text(path, _page(page_data, title, len(labels)))


def _checked_inputs(latents, labels, sprite, grid_x, grid_y):
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
    if labels.size and (not np.issubdtype(labels.dtype, np.integer)
                        or labels.min() < 0 or labels.max() > 9):
        raise ValueError("labels must be integer digits 0..9")
    for name, grid in (("grid_x", grid_x), ("grid_y", grid_y)):
        if grid.ndim != 1 or len(grid) < 2 or not np.all(np.diff(grid) > 0):
            raise ValueError(f"{name} must be a 1-D strictly ascending array of at least 2 "
                             f"finite values, got shape {grid.shape}")
    expected_shape = (len(grid_y), len(grid_x), CELL_SIZE, CELL_SIZE)
    if sprite.shape != expected_shape:
        raise ValueError(f"sprite must have shape (len(grid_y), len(grid_x), 28, 28) = "
                         f"{expected_shape}, got {sprite.shape}")
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


def _digit_colors_hex():
    """The ten digit colours of the PNG scatter plots, as CSS "#rrggbb" strings."""
    import matplotlib.colors

    import plots  # imported here: matplotlib is needed only while writing a page

    return [matplotlib.colors.to_hex(color, keep_alpha=False) for color in plots.digit_colors()]


def _sprite_png(sprite):
    """PNG bytes of all cells tiled in one grayscale image, drawn dark on white.

    Cell (row, col) occupies pixels [row * 28, row * 28 + 28) x [col * 28, col * 28 + 28),
    so the PNG's top row of cells is grid row 0, the smallest grid_y. The
    values are inverted here (ink 1.0 -> black) so the page draws them as they
    are, matching the PNG figures' "gray_r" colormap.
    """
    rows, columns = sprite.shape[:2]
    tiled = sprite.transpose(0, 2, 1, 3).reshape(rows * CELL_SIZE, columns * CELL_SIZE)
    ink = np.clip(np.nan_to_num(tiled, nan=0.0), 0.0, 1.0)
    return _grayscale_png(np.round(255.0 * (1.0 - ink)).astype("uint8"))


def _grayscale_png(pixels):
    """Encodes a 2-D uint8 array as an 8-bit grayscale PNG, with only the standard library."""
    height, width = pixels.shape
    # Filter type 2 ("Up": each byte minus the one above) helps zlib on smooth
    # images; every scanline starts with its filter-type byte.
    above = np.vstack([np.zeros((1, width), dtype="uint8"), pixels[:-1]])
    differences = (pixels.astype("int16") - above).astype("uint8")  # wraps mod 256, as PNG wants
    scanlines = np.hstack([np.full((height, 1), 2, dtype="uint8"), differences])

    def chunk(kind, payload):
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit, grayscale
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(scanlines.tobytes(), 9)) + chunk(b"IEND", b""))


def _script_json(value):
    """JSON safe inside a <script> element: "</" could otherwise end the element early."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")


def _page(page_data, title, point_count):
    rows, columns = len(page_data["gridY"]), len(page_data["gridX"])
    dropped = page_data["droppedCount"]
    dropped_note = (f" ({dropped:,} with non-finite coordinates left out)" if dropped else "")
    preview_size = CELL_SIZE * PREVIEW_SCALE
    return (_PAGE_TEMPLATE
            .replace("%TITLE%", html.escape(title))
            .replace("%POINT_COUNT%", f"{point_count:,}")
            .replace("%DROPPED_NOTE%", html.escape(dropped_note))
            .replace("%GRID_SIZE%", f"{columns} &times; {rows}")
            .replace("%PREVIEW_SIZE%", str(preview_size))
            .replace("%DATA%", _script_json(page_data)))


# The page. Placeholders %NAME% are filled by _page (str.replace, not format():
# the CSS and JavaScript are full of braces).
_PAGE_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<!-- No request may leave the page: everything it needs is inline. -->
<meta http-equiv="Content-Security-Policy"
      content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline';
               img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>%TITLE%</title>
<style>
  body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
         margin: 16px 24px; color: #222; background: #fff; }
  h1 { font-size: 20px; margin: 0 0 4px 0; }
  h2 { font-size: 15px; margin: 0 0 6px 0; font-weight: 600; }
  p.help { margin: 0 0 14px 0; color: #555; font-size: 14px; }
  .panels { display: flex; flex-wrap: wrap; align-items: flex-start; gap: 20px; }
  .panel { display: flex; flex-direction: column; }
  .scatter-row { display: flex; align-items: center; gap: 8px; }
  #scatter { cursor: crosshair; touch-action: none; }
  #legend { list-style: none; margin: 0; padding: 6px 10px; border: 1px solid #ccc;
            border-radius: 4px; font-size: 14px; }
  #legend .legend-title { font-weight: 600; margin-bottom: 4px; }
  #legend li { display: flex; align-items: center; gap: 6px; line-height: 22px; }
  #legend .swatch { display: inline-block; width: 12px; height: 12px; border-radius: 50%; }
  #legend .grid-swatch { border-radius: 0; border: 1.5px dashed #666; width: 10px; height: 10px; }
  #decoded { width: %PREVIEW_SIZE%px; height: %PREVIEW_SIZE%px; border: 1px solid #999;
             image-rendering: pixelated; background: #fff; }
  #coordinates { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 13px;
                 margin-top: 8px; white-space: pre; }
</style>
</head>
<body>
<h1>%TITLE%</h1>
<p class="help">Move the pointer over the scatter: the right panel shows the digit the decoder
draws at the nearest point of its %GRID_SIZE% grid (dashed box).</p>
<div class="panels">
  <div class="panel">
    <h2>Latent codes of %POINT_COUNT% test digits%DROPPED_NOTE%</h2>
    <div class="scatter-row">
      <canvas id="scatter" aria-label="scatter of the test digits' latent codes"></canvas>
      <ul id="legend" aria-label="legend"><li class="legend-title">digit</li></ul>
    </div>
  </div>
  <div class="panel">
    <h2>Decoder output at the pointer</h2>
    <canvas id="decoded" width="%PREVIEW_SIZE%" height="%PREVIEW_SIZE%"
            aria-label="the digit the decoder draws at the pointer"></canvas>
    <div id="coordinates"></div>
  </div>
</div>
<script id="explorer-data" type="application/json">%DATA%</script>
<script>
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("explorer-data").textContent);
  const [xLow, xHigh] = data.xRange;
  const [yLow, yHigh] = data.yRange;

  // Scatter geometry in CSS pixels; the margins hold the ticks and axis labels.
  const WIDTH = 620, HEIGHT = 560;
  const MARGIN = { left: 66, right: 14, top: 12, bottom: 52 };
  const plotWidth = WIDTH - MARGIN.left - MARGIN.right;
  const plotHeight = HEIGHT - MARGIN.top - MARGIN.bottom;
  const toCanvasX = (x) => MARGIN.left + (x - xLow) / (xHigh - xLow) * plotWidth;
  const toCanvasY = (y) => MARGIN.top + (yHigh - y) / (yHigh - yLow) * plotHeight;  // up is +z[1]
  const toLatentX = (px) => xLow + (px - MARGIN.left) / plotWidth * (xHigh - xLow);
  const toLatentY = (py) => yHigh - (py - MARGIN.top) / plotHeight * (yHigh - yLow);
  const clamp = (value, low, high) => Math.min(high, Math.max(low, value));

  // A canvas sharp on high-DPI screens: its backing store is scaled by devicePixelRatio.
  const pixelRatio = window.devicePixelRatio || 1;
  function makeCanvas(canvas) {
    canvas.width = Math.round(WIDTH * pixelRatio);
    canvas.height = Math.round(HEIGHT * pixelRatio);
    canvas.style.width = WIDTH + "px";
    canvas.style.height = HEIGHT + "px";
    const context = canvas.getContext("2d");
    context.setTransform(pixelRatio, 0, 0, pixelRatio, 0, 0);
    return context;
  }

  // Ticks at "nice" steps (1, 2 or 5 times a power of ten), about `count` of them.
  function niceTicks(low, high, count) {
    const roughStep = (high - low) / count;
    const power = Math.pow(10, Math.floor(Math.log10(roughStep)));
    // The nice step nearest above 3/4 of the rough one: a few more ticks rather than too few.
    const step = [1, 2, 5, 10].map((factor) => factor * power).find((s) => s >= 0.75 * roughStep);
    const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
    const ticks = [];
    for (let value = Math.ceil(low / step) * step; value <= high + 1e-9 * step; value += step) {
      // A tick near zero prints as "0", not as "-0.0" or "1e-17".
      const text = (Math.abs(value) < step / 2 ? 0 : value).toFixed(decimals);
      ticks.push({ value: value, text: text });
    }
    return ticks;
  }

  // Grid-cell edges halfway between grid points, as in plots.manifold's extent.
  const halfStepX = (data.gridX[1] - data.gridX[0]) / 2;
  const halfStepY = (data.gridY[1] - data.gridY[0]) / 2;
  const gridBox = {
    left: data.gridX[0] - halfStepX, right: data.gridX[data.gridX.length - 1] + halfStepX,
    bottom: data.gridY[0] - halfStepY, top: data.gridY[data.gridY.length - 1] + halfStepY,
  };

  // The scatter is drawn once into an off-screen canvas; each pointer move only
  // copies it back and draws the marker, which keeps 10,000 points smooth.
  const scatterCanvas = document.getElementById("scatter");
  const scatterContext = makeCanvas(scatterCanvas);
  const baseCanvas = document.createElement("canvas");
  const baseContext = makeCanvas(baseCanvas);

  function drawBase(context) {
    context.fillStyle = "#fff";
    context.fillRect(0, 0, WIDTH, HEIGHT);
    context.font = "12px system-ui, sans-serif";
    context.fillStyle = "#333";
    context.strokeStyle = "#e4e4e4";
    context.lineWidth = 1;
    // Light grid lines and tick labels.
    context.textAlign = "center";
    context.textBaseline = "top";
    for (const tick of niceTicks(xLow, xHigh, 8)) {
      const px = Math.round(toCanvasX(tick.value)) + 0.5;
      context.beginPath();
      context.moveTo(px, MARGIN.top);
      context.lineTo(px, MARGIN.top + plotHeight);
      context.stroke();
      context.fillText(tick.text, px, MARGIN.top + plotHeight + 6);
    }
    context.textAlign = "right";
    context.textBaseline = "middle";
    for (const tick of niceTicks(yLow, yHigh, 8)) {
      const py = Math.round(toCanvasY(tick.value)) + 0.5;
      context.beginPath();
      context.moveTo(MARGIN.left, py);
      context.lineTo(MARGIN.left + plotWidth, py);
      context.stroke();
      context.fillText(tick.text, MARGIN.left - 6, py);
    }
    // The points, with matplotlib's alpha of the PNG scatter.
    context.save();
    context.beginPath();
    context.rect(MARGIN.left, MARGIN.top, plotWidth, plotHeight);
    context.clip();  // a disc at the range's edge must not cross the frame into the ticks
    context.globalAlpha = 0.7;
    for (let index = 0; index < data.labels.length; index++) {
      context.fillStyle = data.digitColors[data.labels.charCodeAt(index) - 48];
      context.beginPath();
      context.arc(toCanvasX(data.latents[2 * index]), toCanvasY(data.latents[2 * index + 1]),
                  1.6, 0, 2 * Math.PI);
      context.fill();
    }
    context.restore();
    // The decoded grid's extent: outside it the preview shows the nearest edge cell.
    context.save();
    context.setLineDash([5, 4]);
    context.strokeStyle = "#666";
    context.lineWidth = 1.5;
    context.strokeRect(toCanvasX(gridBox.left), toCanvasY(gridBox.top),
                       toCanvasX(gridBox.right) - toCanvasX(gridBox.left),
                       toCanvasY(gridBox.bottom) - toCanvasY(gridBox.top));
    context.restore();
    // Frame and axis labels.
    context.strokeStyle = "#444";
    context.lineWidth = 1;
    context.strokeRect(MARGIN.left + 0.5, MARGIN.top + 0.5, plotWidth, plotHeight);
    context.font = "14px system-ui, sans-serif";
    context.fillStyle = "#222";
    context.textAlign = "center";
    context.textBaseline = "bottom";
    context.fillText("z[0]", MARGIN.left + plotWidth / 2, HEIGHT - 6);
    context.save();
    context.translate(16, MARGIN.top + plotHeight / 2);
    context.rotate(-Math.PI / 2);
    context.textBaseline = "middle";
    context.fillText("z[1]", 0, 0);
    context.restore();
  }
  drawBase(baseContext);

  // The legend is HTML, so its text stays crisp and selectable.
  const legend = document.getElementById("legend");
  data.digitColors.forEach((color, digit) => {
    const item = document.createElement("li");
    item.innerHTML = '<span class="swatch"></span>' + digit;
    item.firstChild.style.background = color;
    legend.appendChild(item);
  });
  const gridItem = document.createElement("li");
  gridItem.innerHTML = '<span class="swatch grid-swatch"></span>decoded grid';
  legend.appendChild(gridItem);

  // Index of the grid value nearest to `value` (grids are short: a linear scan is enough).
  function nearestIndex(grid, value) {
    let best = 0;
    for (let index = 1; index < grid.length; index++) {
      if (Math.abs(grid[index] - value) < Math.abs(grid[best] - value)) best = index;
    }
    return best;
  }

  const preview = document.getElementById("decoded");
  const previewContext = preview.getContext("2d");
  previewContext.imageSmoothingEnabled = false;  // show the decoder's 28 x 28 pixels as blocks
  const coordinates = document.getElementById("coordinates");
  const sprite = new Image();
  const state = { x: 0, y: 0, row: -1, col: -1, spriteLoaded: false,
                  plot: { left: MARGIN.left, top: MARGIN.top, width: plotWidth, height: plotHeight,
                          xRange: data.xRange, yRange: data.yRange } };
  window.explorerState = state;

  function drawPreview() {
    previewContext.fillStyle = "#fff";
    previewContext.fillRect(0, 0, preview.width, preview.height);
    if (!state.spriteLoaded || state.row < 0) return;
    // Sprite row r holds grid_y[r]: row 0 is the smallest z[1], the bottom of the plot.
    previewContext.drawImage(sprite, state.col * data.cellSize, state.row * data.cellSize,
                             data.cellSize, data.cellSize, 0, 0, preview.width, preview.height);
  }

  function drawMarker() {
    scatterContext.save();
    scatterContext.setTransform(1, 0, 0, 1, 0, 0);
    scatterContext.drawImage(baseCanvas, 0, 0);
    scatterContext.restore();
    // A crosshair at the pointer, and a square at the grid point whose image is shown.
    const px = toCanvasX(state.x), py = toCanvasY(state.y);
    scatterContext.strokeStyle = "rgba(0, 0, 0, 0.55)";
    scatterContext.lineWidth = 1;
    scatterContext.beginPath();
    scatterContext.moveTo(px, MARGIN.top); scatterContext.lineTo(px, MARGIN.top + plotHeight);
    scatterContext.moveTo(MARGIN.left, py); scatterContext.lineTo(MARGIN.left + plotWidth, py);
    scatterContext.stroke();
    const gx = toCanvasX(data.gridX[state.col]), gy = toCanvasY(data.gridY[state.row]);
    scatterContext.lineWidth = 2;
    scatterContext.strokeStyle = "#000";
    scatterContext.strokeRect(gx - 5, gy - 5, 10, 10);
  }

  const format = (value) => (value >= 0 ? " " : "") + value.toFixed(3);
  function showPoint(x, y) {
    state.x = clamp(x, xLow, xHigh);
    state.y = clamp(y, yLow, yHigh);
    const row = nearestIndex(data.gridY, state.y), col = nearestIndex(data.gridX, state.x);
    if (row !== state.row || col !== state.col) {
      state.row = row;
      state.col = col;
      preview.dataset.cell = row + "," + col;
      drawPreview();
    }
    drawMarker();
    coordinates.textContent =
      "pointer     z = (" + format(state.x) + ", " + format(state.y) + ")\\n" +
      "grid point  z = (" + format(data.gridX[col]) + ", " + format(data.gridY[row]) + ")" +
      "  row " + row + ", column " + col;
  }

  // Pointer events cover mouse, pen and touch.
  scatterCanvas.addEventListener("pointermove", (event) => {
    const box = scatterCanvas.getBoundingClientRect();
    showPoint(toLatentX(event.clientX - box.left), toLatentY(event.clientY - box.top));
  });

  // Start at the centre of the decoded grid, so the preview is never empty.
  showPoint((data.gridX[0] + data.gridX[data.gridX.length - 1]) / 2,
            (data.gridY[0] + data.gridY[data.gridY.length - 1]) / 2);
  sprite.onload = () => {
    state.spriteLoaded = true;
    drawPreview();
  };
  sprite.src = data.sprite;
})();
</script>
</body>
</html>
"""
