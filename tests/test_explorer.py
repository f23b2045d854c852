"""The HTML latent-space explorer: the page's content, and its behaviour in a real browser.

The browser tests drive headless Chromium through Selenium; they are skipped,
with the reason, where Chromium, chromedriver or Selenium is not installed
(Debian: `apt-get install chromium chromium-driver`; `pip install selenium`).
"""

import ast
import base64
import io
import json
import pathlib
import re
import shutil
import string
import tempfile

import matplotlib.colors
import matplotlib.image
import numpy as np
import pytest
from PIL import Image

import explorer
import plots

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--window-size=1400,900")
GRID_CELLS = 32

# src= / href= / url(...) / @import pointing off the page: a network or protocol-relative address.
OUTSIDE_REFERENCE = re.compile(
    r"""(?:\b(?:src|href|action|poster)\s*=\s*["']?\s*(?:[a-z][a-z0-9+.-]*:)?//"""
    r"""|url\(\s*["']?\s*(?:[a-z][a-z0-9+.-]*:)?//|@import)""", re.IGNORECASE)


def outside_references(page):
    """Every place where `page` would load something from outside itself."""
    return [match.group(0) for match in OUTSIDE_REFERENCE.finditer(page)]


def embedded_data(page):
    """The JSON the page embeds for its script."""
    match = re.search(r'<script id="explorer-data" type="application/json">(.*?)</script>', page,
                      re.DOTALL)
    assert match, "the page has no explorer-data script element"
    return json.loads(match.group(1))


def decoded_sprite(page):
    """The embedded sprite PNG as a (height, width) array of grey levels 0..255."""
    uri = embedded_data(page)["sprite"]
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix)
    pixels = matplotlib.image.imread(io.BytesIO(base64.b64decode(uri[len(prefix):])), format="png")
    assert pixels.ndim == 2, f"the sprite should be grayscale, got shape {pixels.shape}"
    return np.round(pixels * 255).astype(int)  # imread gives 8-bit PNGs as floats in [0, 1]


def pattern_sprite(rows, columns):
    """A sprite whose cells all differ: ink r/(rows-1) in the top half, c/(columns-1) below."""
    sprite = np.zeros((rows, columns, 28, 28))
    sprite[:, :, :14, :] = (np.arange(rows) / (rows - 1))[:, None, None, None]
    sprite[:, :, 14:, :] = (np.arange(columns) / (columns - 1))[None, :, None, None]
    return sprite


def expected_grey(ink):
    """The grey level the page shows for `ink` (gray_r: no ink white, full ink black)."""
    return int(round(255 * (1 - ink)))


def two_clusters(count=400, seed=0):
    """Latents of two digits in two clusters: 0 at the bottom left, 7 at the top right."""
    rng = np.random.default_rng(seed)
    labels = np.where(np.arange(count) % 2 == 0, 0, 7)
    centres = np.where(labels[:, None] == 0, [-2.0, -1.0], [2.0, 1.5])
    return centres + rng.normal(scale=0.4, size=(count, 2)), labels


def write_pattern_page(path, rows=GRID_CELLS, columns=GRID_CELLS, title="Two clusters"):
    latents, labels = two_clusters()
    grid_x, grid_y = np.linspace(-3.0, 3.0, columns), np.linspace(-2.5, 2.5, rows)
    explorer.write_explorer(path, latents, labels, pattern_sprite(rows, columns), grid_x, grid_y,
                            title)
    return grid_x, grid_y


# ----------------------------------------------------------------- the page's content


def test_page_is_self_contained_and_titled(tmp_path):
    path = tmp_path / "explorer.html"
    write_pattern_page(path, title="VAE <latents> & digits")
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    # The title is escaped, so it can't break the markup.
    assert "<title>VAE &lt;latents&gt; &amp; digits</title>" in page
    assert "<h1>VAE &lt;latents&gt; &amp; digits</h1>" in page
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"<script[^>]*\bsrc\s*=", page, re.IGNORECASE)
    assert not re.search(r"<link\b", page, re.IGNORECASE)
    assert outside_references(page) == []
    assert 'id="scatter"' in page and 'id="decoded"' in page and 'id="legend"' in page
    assert not list(tmp_path.glob(".tmp-*")), "the atomic write left a temporary file"


@pytest.mark.parametrize("snippet", [
    '<script src="https://cdn.example.org/plot.js"></script>',
    "<link rel=stylesheet href=//fonts.example.org/font.css>",
    '<img src="http://example.org/sprite.png">',
    "body { background: url('https://example.org/a.png') }",
    "@import 'theme.css';",
])
def test_the_outside_reference_check_catches_outside_references(snippet):
    # The self-containment test above is only as good as this check.
    assert outside_references(f"<html><head>{snippet}</head></html>")


def test_sprite_decodes_to_the_grid_of_cells_with_row_zero_at_the_top(tmp_path):
    # A non-square grid, so a transposed sprite would show in the PNG's size.
    rows, columns = 5, 7
    path = tmp_path / "explorer.html"
    write_pattern_page(path, rows=rows, columns=columns)
    pixels = decoded_sprite(path.read_text(encoding="utf-8"))
    assert pixels.shape == (rows * 28, columns * 28)
    sprite = pattern_sprite(rows, columns)
    for row in range(rows):
        for column in range(columns):
            cell = pixels[row * 28:(row + 1) * 28, column * 28:(column + 1) * 28]
            expected = np.vectorize(expected_grey)(sprite[row, column])
            np.testing.assert_array_equal(cell, expected, err_msg=f"cell {row},{column}")


def test_sprite_png_round_trips_through_pillow(tmp_path):
    # Random ink, so rounding (not truncating) to 0..255 shows; out-of-range and NaN
    # ink, so the clipping shows; a non-square grid, so a transposed tiling shows.
    rows, columns = 3, 4
    sprite = np.random.default_rng(0).uniform(-0.2, 1.2, size=(rows, columns, 28, 28))
    sprite[1, 2, 5, 5] = np.nan
    grid_x, grid_y = np.linspace(-1.0, 1.0, columns), np.linspace(-1.0, 1.0, rows)
    latents, labels = two_clusters(count=20)
    path = tmp_path / "explorer.html"
    explorer.write_explorer(path, latents, labels, sprite, grid_x, grid_y, "t")
    uri = embedded_data(path.read_text(encoding="utf-8"))["sprite"]
    image = Image.open(io.BytesIO(base64.b64decode(uri.removeprefix("data:image/png;base64,"))))
    assert image.format == "PNG" and image.mode == "L"  # 8-bit grayscale, one channel
    # Tile (row, col) is sprite[row, col]; ink 1 (and above) black, ink 0 (below, NaN) white.
    ink = np.clip(np.nan_to_num(sprite, nan=0.0), 0.0, 1.0)
    expected = np.round(255 * (1 - ink)).astype("uint8")
    expected = expected.transpose(0, 2, 1, 3).reshape(rows * 28, columns * 28)
    np.testing.assert_array_equal(np.asarray(image), expected)


def test_every_template_placeholder_is_filled(tmp_path):
    path = tmp_path / "explorer.html"
    write_pattern_page(path)
    page = path.read_text(encoding="utf-8")
    template = explorer.PAGE_TEMPLATE_PATH.read_text(encoding="utf-8")
    placeholders = {match.group("named") or match.group("braced")
                    for match in string.Template.pattern.finditer(template)
                    if match.group("named") or match.group("braced")}
    assert placeholders == {"title", "point_count", "dropped_note", "grid_size",
                            "preview_width", "preview_height", "item", "data_json"}
    # No "$name" or "${name}" is left, in any form.
    assert re.findall(r"\$\{?[A-Za-z_]\w*", page) == []
    assert "$" not in page
    assert "<title>Two clusters</title>" in page and 'width="280" height="280"' in page
    assert "width: 280px; height: 280px;" in page
    assert "of its 32 &times; 32 grid" in page
    assert "Latent codes of 400 test digits</h2>" in page


def test_template_is_found_from_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the repo's root is no longer the working directory
    write_pattern_page(tmp_path / "explorer.html")
    assert (tmp_path / "explorer.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_a_title_with_markup_stays_text(tmp_path):
    title = "</script><script>alert('x')</script> & $data_json ${title}"
    path = tmp_path / "explorer.html"
    write_pattern_page(path, title=title)
    page = path.read_text(encoding="utf-8")
    escaped = ("&lt;/script&gt;&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; "
               "$data_json ${title}")
    assert f"<title>{escaped}</title>" in page
    assert f"<h1>{escaped}</h1>" in page
    # Only the template's own two script elements; the data still parses.
    assert page.count("<script") == 2 and page.count("</script>") == 2
    assert embedded_data(page)["cellWidth"] == 28 and embedded_data(page)["cellHeight"] == 28


def test_embedded_json_cannot_end_its_script_element():
    text = explorer._json_for_script_element({"note": "</script><script>alert(1)</script>"})
    assert "</" not in text
    assert json.loads(text) == {"note": "</script><script>alert(1)</script>"}


def test_explorer_imports_are_at_the_top_and_not_keras():
    # The explorer is drawn from arrays: its own code needs neither Keras nor TensorFlow.
    # (What its imports import in turn, e.g. run_folder, is up to those modules.)
    tree = ast.parse(pathlib.Path(explorer.__file__).read_text(encoding="utf-8"))
    imports = [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert imports and all(node in tree.body for node in imports), "an import inside a function"
    modules = {alias.name for node in imports if isinstance(node, ast.Import)
               for alias in node.names} | {node.module for node in imports
                                            if isinstance(node, ast.ImportFrom)}
    assert not {module for module in modules
                if module.split(".")[0] in ("keras", "tensorflow")}, modules


def test_embedded_latents_labels_and_colours(tmp_path):
    path = tmp_path / "explorer.html"
    latents, labels = two_clusters()
    grid_x, grid_y = write_pattern_page(path)
    data = embedded_data(path.read_text(encoding="utf-8"))
    embedded = np.array(data["latents"]).reshape(-1, 2)
    embedded_labels = np.array([int(character) for character in data["labels"]])
    assert embedded.shape == latents.shape
    # The drawing order is shuffled: compare per digit, as sorted coordinates.
    for digit in (0, 7):
        for axis in (0, 1):
            np.testing.assert_allclose(np.sort(embedded[embedded_labels == digit, axis]),
                                       np.sort(latents[labels == digit, axis]), atol=6e-4)
    np.testing.assert_allclose(data["gridX"], grid_x)
    np.testing.assert_allclose(data["gridY"], grid_y)
    # The axes show every point and the whole grid.
    assert data["xRange"][0] < min(latents[:, 0].min(), grid_x[0])
    assert data["xRange"][1] > max(latents[:, 0].max(), grid_x[-1])
    assert data["yRange"][0] < min(latents[:, 1].min(), grid_y[0])
    assert data["yRange"][1] > max(latents[:, 1].max(), grid_y[-1])
    # The colours of the PNG scatter plots: 0 purple ... 9 red.
    assert data["classColors"] == [matplotlib.colors.to_hex(color, keep_alpha=False)
                                   for color in plots.class_colors(10)]
    assert data["classColors"][0] == "#8000ff" and data["classColors"][9] == "#ff0000"


def test_realistic_page_stays_small(tmp_path, mnist_arrays):
    # 10,000 real test labels and 32 x 32 real digit images: the size analysis.py writes.
    labels = mnist_arrays["y_test"]
    rng = np.random.default_rng(0)
    latents = rng.normal(size=(len(labels), 2)) + rng.normal(scale=2.0, size=(10, 2))[labels]
    images = mnist_arrays["x_test"][:GRID_CELLS * GRID_CELLS] / 255.0
    grid = np.linspace(-3.0, 3.0, GRID_CELLS)
    path = tmp_path / "explorer.html"
    explorer.write_explorer(path, latents, labels, images.reshape(32, 32, 28, 28), grid, grid,
                            "real MNIST")
    size = path.stat().st_size
    assert size < 1_000_000, f"the page is {size:,} bytes"


def test_non_finite_points_are_left_out_and_counted(tmp_path):
    latents, labels = two_clusters(count=20)
    latents[3, 0] = np.nan
    latents[5, 1] = np.inf
    grid = np.linspace(-3.0, 3.0, 4)
    path = tmp_path / "explorer.html"
    explorer.write_explorer(path, latents, labels, np.zeros((4, 4, 28, 28)), grid, grid, "t")
    page = path.read_text(encoding="utf-8")
    data = embedded_data(page)  # json.loads accepts NaN, but the browser's JSON.parse doesn't
    assert "NaN" not in page and "Infinity" not in page
    assert len(data["labels"]) == 18 and len(data["latents"]) == 36
    assert "(2 with non-finite coordinates left out)" in page


@pytest.mark.parametrize("change, message", [
    (lambda inputs: inputs.update(sprite=np.zeros((4, 5, 28, 28))), "sprite must have shape"),
    (lambda inputs: inputs.update(labels=np.full(20, 10)), "digits 0..9"),
    (lambda inputs: inputs.update(labels=np.zeros(19, dtype=int)), "labels must have shape"),
    (lambda inputs: inputs.update(latents=np.zeros((20, 3))), r"shape \(N, 2\)"),
    (lambda inputs: inputs.update(grid_y=np.linspace(3.0, -3.0, 5)), "grid_y must be"),
    (lambda inputs: inputs.update(latents=np.full((20, 2), np.nan)), "no latent point"),
])
def test_inconsistent_inputs_are_refused(tmp_path, change, message):
    latents, labels = two_clusters(count=20)
    inputs = dict(latents=latents, labels=labels, sprite=np.zeros((5, 4, 28, 28)),
                  grid_x=np.linspace(-3.0, 3.0, 4), grid_y=np.linspace(-3.0, 3.0, 5))
    explorer.write_explorer(tmp_path / "good.html", title="t", **inputs)
    change(inputs)
    with pytest.raises(ValueError, match=message):
        explorer.write_explorer(tmp_path / "bad.html", title="t", **inputs)
    assert not (tmp_path / "bad.html").exists()


# ----------------------------------------------------------------- in a real browser


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium driven by Selenium, shared by this module's browser tests."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    if missing:
        pytest.skip(f"browser test needs {' and '.join(missing)} "
                    f"(Debian: apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("browser test needs Selenium (pip install selenium)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    with tempfile.TemporaryDirectory(prefix="explorer-chromium-") as profile:
        options.add_argument(f"--user-data-dir={profile}")  # a fresh profile for each run
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # to read JS errors
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def open_page(driver, path):
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(path.resolve().as_uri())
    WebDriverWait(driver, 10).until(
        lambda driver: driver.execute_script(
            "return Boolean(window.explorerState && window.explorerState.spriteLoaded)"))


def preview_snapshot(driver):
    """What the preview canvas shows: its data-cell, PNG data URL and two sample pixels."""
    return driver.execute_script("""
        const canvas = document.getElementById("decoded");
        const context = canvas.getContext("2d");
        // The cell's top half encodes its row, the bottom half its column (pattern_sprite).
        const grey = (x, y) => context.getImageData(x, y, 1, 1).data[0];
        return {cell: canvas.dataset.cell, url: canvas.toDataURL(),
                top: grey(canvas.width / 2, canvas.height / 4),
                bottom: grey(canvas.width / 2, 3 * canvas.height / 4),
                state: window.explorerState,
                coordinates: document.getElementById("coordinates").textContent};
    """)


def move_over_scatter(driver, x_fraction, y_fraction):
    """Moves the mouse to a fraction of the scatter's plot area (0, 0 = top left)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    scatter = driver.find_element(By.ID, "scatter")
    plot = driver.execute_script("return window.explorerState.plot")
    # Selenium 4 measures the offset from the element's centre.
    x_offset = plot["left"] + x_fraction * plot["width"] - scatter.size["width"] / 2
    y_offset = plot["top"] + y_fraction * plot["height"] - scatter.size["height"] / 2
    ActionChains(driver).move_to_element_with_offset(scatter, round(x_offset),
                                                     round(y_offset)).perform()
    return plot


def nearest(grid, value):
    return int(np.argmin(np.abs(np.asarray(grid) - value)))


def test_preview_follows_the_mouse_over_the_scatter(browser, tmp_path):
    path = tmp_path / "explorer.html"
    grid_x, grid_y = write_pattern_page(path)
    open_page(browser, path)

    initial = preview_snapshot(browser)
    middle = GRID_CELLS // 2
    assert initial["state"]["row"] in (middle - 1, middle)  # the grid's centre
    assert initial["state"]["col"] in (middle - 1, middle)

    shown = {}
    # Bottom left, top right, and the plot's top-left corner (outside the grid: edge cell).
    for name, (x_fraction, y_fraction) in {"bottom left": (0.25, 0.75),
                                           "top right": (0.75, 0.25),
                                           "corner": (0.005, 0.005)}.items():
        plot = move_over_scatter(browser, x_fraction, y_fraction)
        snapshot = preview_snapshot(browser)
        state = snapshot["state"]
        row, col = state["row"], state["col"]
        # The pointer's latent point is where the mouse is (within two pixels).
        x_low, x_high = plot["xRange"]
        y_low, y_high = plot["yRange"]
        assert state["x"] == pytest.approx(x_low + x_fraction * (x_high - x_low),
                                           abs=2 * (x_high - x_low) / plot["width"]), name
        assert state["y"] == pytest.approx(y_high - y_fraction * (y_high - y_low),
                                           abs=2 * (y_high - y_low) / plot["height"]), name
        # The cell shown is the grid point nearest to it, and the page says so.
        assert (row, col) == (nearest(grid_y, state["y"]), nearest(grid_x, state["x"])), name
        assert snapshot["cell"] == f"{row},{col}", name
        assert f"row {row}, column {col}" in snapshot["coordinates"], name
        # The pixels are that cell's, dark on white.
        assert snapshot["top"] == pytest.approx(expected_grey(row / (GRID_CELLS - 1)), abs=2), name
        assert snapshot["bottom"] == pytest.approx(expected_grey(col / (GRID_CELLS - 1)),
                                                   abs=2), name
        shown[name] = snapshot

    # Row 0 is the smallest z[1], the bottom of the plot.
    assert shown["bottom left"]["state"]["row"] < middle - 1
    assert shown["bottom left"]["state"]["col"] < middle - 1
    assert shown["top right"]["state"]["row"] > middle
    assert shown["top right"]["state"]["col"] > middle
    assert shown["corner"]["cell"] == f"{GRID_CELLS - 1},0"
    assert len({snapshot["url"] for snapshot in shown.values()} | {initial["url"]}) == 4

    screenshot = tmp_path / "explorer.png"
    assert browser.save_screenshot(str(screenshot))
    assert screenshot.read_bytes().startswith(b"\x89PNG")

    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == [], errors


def test_page_draws_the_scatter_and_legend(browser, tmp_path):
    from selenium.webdriver.common.by import By

    path = tmp_path / "explorer.html"
    write_pattern_page(path)
    open_page(browser, path)
    legend = [item.text for item in browser.find_elements(By.CSS_SELECTOR, "#legend li")]
    assert legend == ["digit"] + [str(digit) for digit in range(10)] + ["decoded grid"]
    swatch = browser.find_element(By.CSS_SELECTOR, "#legend li:nth-child(2) .swatch")
    assert swatch.value_of_css_property("background-color") == "rgba(128, 0, 255, 1)"  # 0: purple
    # Digit 0's points (purple) are drawn around their cluster centre (-2, -1), bottom left,
    # and digit 7's (orange) around (2, 1.5), top right: the axes point the right way.
    drawn = browser.execute_script("""
        const canvas = document.getElementById("scatter");
        const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
        const scale = canvas.width / canvas.clientWidth;  // backing-store pixels per CSS pixel
        const colours = {purple: [0, 0, 0], orange: [0, 0, 0]};  // count, sum of x, sum of y
        for (let i = 0; i < pixels.length; i += 4) {
          const [r, g, b] = [pixels[i], pixels[i + 1], pixels[i + 2]];
          const name = b > 200 && r < 190 && g < 120 ? "purple"
                     : r > 200 && g > 120 && g < 210 && b < 170 ? "orange" : null;
          if (name) {
            const pixel = i / 4;
            colours[name][0]++;
            colours[name][1] += (pixel % canvas.width) / scale;
            colours[name][2] += Math.floor(pixel / canvas.width) / scale;
          }
        }
        return colours;
    """)
    plot = browser.execute_script("return window.explorerState.plot")
    (x_low, x_high), (y_low, y_high) = plot["xRange"], plot["yRange"]
    for colour, (centre_x, centre_y) in {"purple": (-2.0, -1.0), "orange": (2.0, 1.5)}.items():
        count, sum_x, sum_y = drawn[colour]
        assert count > 200, drawn
        expected_x = plot["left"] + (centre_x - x_low) / (x_high - x_low) * plot["width"]
        expected_y = plot["top"] + (y_high - centre_y) / (y_high - y_low) * plot["height"]
        assert sum_x / count == pytest.approx(expected_x, abs=15), colour
        assert sum_y / count == pytest.approx(expected_y, abs=15), colour
    # Both panels side by side: the preview starts right of the scatter.
    scatter = browser.find_element(By.ID, "scatter").rect
    preview = browser.find_element(By.ID, "decoded").rect
    assert preview["x"] > scatter["x"] + scatter["width"]
