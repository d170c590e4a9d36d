// livexai front end: one plain ES module for every livexai widget (anywidget).
//
// The pure functions below (array decoding, colour maps, superpixel selection, overlay composition) touch no DOM
// and are tested with `node --test js/`. `render` builds the view; everything that only changes how a result is
// drawn (opacity, colour map, top-k superpixels, sign filter, hide-the-rest, boundaries) happens here, with no
// round trip to the kernel. Labels and messages are always set as text (textContent), never parsed as HTML.

// Trait names shared with Python: src/livexai/widgets/_base.py (SYNCED) and the widget modules.
export const TRAITS = Object.freeze({
  kind: "kind",
  title: "title",
  status: "status",
  error: "error",
  progress: "progress",
  elapsedMs: "elapsed_ms",
  nEvals: "n_evals",
  image: "image",
  panels: "panels",
  predictions: "predictions",
  target: "target",
  controls: "controls",
  channel: "channel", // LayerWidget
  thumbnails: "thumbnails", // Explorer
  selected: "selected", // Explorer
  correlation: "correlation", // Explorer
});

// The dtypes Python sends (src/livexai/widgets/_serialize.py, WIRE_DTYPES).
export const DTYPES = Object.freeze({ float32: Float32Array, int32: Int32Array, uint8: Uint8Array });

// Colour stops sampled at 9 even points from matplotlib's maps (RdBu reversed: blue negative, red positive).
const STOPS = Object.freeze({
  "red-blue": ["#053061", "#2a71b2", "#6bacd1", "#c2ddec", "#f7f6f6", "#fbccb4", "#e48066", "#ba2832", "#67001f"],
  inferno: ["#000004", "#210c4a", "#57106e", "#8a226a", "#bc3754", "#e45a31", "#f98e09", "#f9cb35", "#fcffa4"],
  viridis: ["#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962", "#addc30", "#fde725"],
  grey: ["#000000", "#ffffff"],
});
export const COLORMAPS = Object.freeze(["auto", "red-blue", "inferno", "viridis", "grey"]);
export const SIGNS = Object.freeze(["all", "positive", "negative"]);
const HIDDEN = [0, 0, 0]; // what hide-the-rest paints outside the selection (lime's get_image_and_mask: black)
const BOUNDARY = [255, 255, 0]; // superpixel outlines, as Explanation.plot draws them

// ---------------------------------------------------------------------------------------------------------------
// Pure functions
// ---------------------------------------------------------------------------------------------------------------

/** Decode `{data, dtype, shape}` (data: DataView, ArrayBuffer or typed array) into `{values, shape}`. */
export function decodeArray(wire) {
  if (wire === null || wire === undefined) return null;
  const Ctor = DTYPES[wire.dtype];
  if (!Ctor) throw new Error(`unsupported dtype ${JSON.stringify(wire.dtype)}; expected one of ${Object.keys(DTYPES)}`);
  const shape = Array.from(wire.shape, Number);
  const count = shape.reduce((a, b) => a * b, 1);
  const data = wire.data;
  let buffer;
  let offset = 0;
  let length;
  if (data instanceof ArrayBuffer) {
    buffer = data;
    length = data.byteLength;
  } else if (ArrayBuffer.isView(data)) {
    buffer = data.buffer;
    offset = data.byteOffset;
    length = data.byteLength;
  } else {
    throw new Error("array data must be an ArrayBuffer, DataView or typed array");
  }
  if (length !== count * Ctor.BYTES_PER_ELEMENT) {
    throw new Error(`array of shape [${shape}] and dtype ${wire.dtype} needs ${count * Ctor.BYTES_PER_ELEMENT} bytes, got ${length}`);
  }
  if (offset % Ctor.BYTES_PER_ELEMENT !== 0) {
    // A typed array must start on its element size: copy a misaligned buffer.
    const copy = new Uint8Array(length);
    copy.set(new Uint8Array(buffer, offset, length));
    return { values: new Ctor(copy.buffer), shape };
  }
  return { values: new Ctor(buffer, offset, count), shape };
}

/** "#rrggbb" -> [r, g, b]. */
export function hexToRgb(hex) {
  const n = parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

/** The colour map actually used: "auto" is red-blue for signed maps and inferno for non-negative ones (CAM). */
export function resolveColormap(name, signed) {
  if (name === "auto" || !(name in STOPS)) return signed ? "red-blue" : "inferno";
  return name;
}

/** A lookup table of `size` RGB colours (Uint8Array, size*3) interpolated linearly between the map's stops. */
export function colormapLUT(name, size = 256) {
  const stops = (STOPS[name] || STOPS.inferno).map(hexToRgb);
  const lut = new Uint8Array(size * 3);
  for (let i = 0; i < size; i++) {
    const position = (i / (size - 1)) * (stops.length - 1);
    const k = Math.min(Math.floor(position), stops.length - 2);
    const f = position - k;
    for (let c = 0; c < 3; c++) lut[i * 3 + c] = Math.round(stops[k][c] * (1 - f) + stops[k + 1][c] * f);
  }
  return lut;
}

/** CSS colours along a map, for a colour bar's gradient. */
export function colormapCss(name, steps = 9) {
  const lut = colormapLUT(name, steps);
  return Array.from({ length: steps }, (_, i) => `rgb(${lut[i * 3]}, ${lut[i * 3 + 1]}, ${lut[i * 3 + 2]})`);
}

/**
 * The value range a colour map spans. Signed maps: symmetric [-m, m] with m = max |v| (zero in the middle, so
 * colour strength compares across signs). Non-negative maps: [min(0, lowest), highest]. Never empty.
 */
export function valueRange(values, signed) {
  let low = Infinity;
  let high = -Infinity;
  let largest = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (!Number.isFinite(v)) continue;
    if (v < low) low = v;
    if (v > high) high = v;
    const a = Math.abs(v);
    if (a > largest) largest = a;
  }
  if (signed) {
    const m = largest > 0 ? largest : 1;
    return { low: -m, high: m };
  }
  if (!Number.isFinite(low)) return { low: 0, high: 1 };
  low = Math.min(0, low);
  return { low, high: high > low ? high : low + 1 };
}

/** `value` scaled to [0, 1] over `range`, clipped. */
export function normalise(value, range) {
  const t = (value - range.low) / (range.high - range.low);
  return t < 0 ? 0 : t > 1 ? 1 : t;
}

/**
 * Which superpixels to show: a flag (Uint8Array, one per weight) for the `topK` strongest of those allowed by
 * `sign` ("positive": weight > 0, ranked by weight; "negative": weight < 0, most negative first; "all": any
 * non-zero weight, ranked by |weight|). `topK` <= 0 keeps every allowed superpixel. Ties keep index order.
 */
export function selectSegments(weights, { topK = 0, sign = "all" } = {}) {
  const flags = new Uint8Array(weights.length);
  const allowed = [];
  for (let i = 0; i < weights.length; i++) {
    const w = weights[i];
    if ((sign === "positive" && w > 0) || (sign === "negative" && w < 0) || (sign === "all" && w !== 0)) allowed.push(i);
  }
  const score = sign === "positive" ? (i) => weights[i] : sign === "negative" ? (i) => -weights[i] : (i) => Math.abs(weights[i]);
  allowed.sort((a, b) => score(b) - score(a) || a - b);
  const keep = topK > 0 ? Math.min(topK, allowed.length) : allowed.length;
  for (let j = 0; j < keep; j++) flags[allowed[j]] = 1;
  return flags;
}

/**
 * Pixels to colour (Uint8Array of 0/1, one per pixel). With superpixels (`segments` labels and `weights`), the
 * selected superpixels; otherwise a per-pixel sign filter (top-k does not apply to pixel maps).
 */
export function pixelMask(values, { segments = null, weights = null, topK = 0, sign = "all" } = {}) {
  const mask = new Uint8Array(values.length);
  if (segments && weights) {
    const flags = selectSegments(weights, { topK, sign });
    for (let i = 0; i < mask.length; i++) {
      const label = segments[i];
      mask[i] = label >= 0 && label < flags.length ? flags[label] : 0;
    }
    return mask;
  }
  for (let i = 0; i < mask.length; i++) {
    const v = values[i];
    mask[i] = sign === "positive" ? (v > 0 ? 1 : 0) : sign === "negative" ? (v < 0 ? 1 : 0) : 1;
  }
  return mask;
}

/**
 * RGBA pixels (Uint8ClampedArray, width*height*4) of a map drawn over an image.
 *
 * image: Uint8Array RGB (width*height*3) or null (a mid-grey background); values: the map (width*height);
 * mask: pixels to colour (null: all); range: {low, high}; colormap: a name of STOPS; opacity in [0, 1].
 * The blend follows the evidence, so where the map is zero the image shows untouched and strong evidence shows
 * in full colour: signed maps use alpha = opacity * |t - 0.5| * 2 (t in [0, 1] over a range centred on zero),
 * non-negative maps alpha = opacity * t. hideRest paints unmasked pixels black.
 */
export function composeOverlay({
  image = null,
  values,
  width,
  height,
  mask = null,
  range,
  colormap = "inferno",
  signed = false,
  opacity = 0.6,
  hideRest = false,
}) {
  const n = width * height;
  if (values.length !== n) throw new Error(`map has ${values.length} values, expected ${width}x${height}`);
  const useImage = image !== null && image.length === n * 3;
  const lut = colormapLUT(colormap, 256);
  const out = new Uint8ClampedArray(n * 4);
  const a0 = Math.max(0, Math.min(1, opacity));
  for (let i = 0; i < n; i++) {
    const o = i * 4;
    let r = useImage ? image[i * 3] : 128;
    let g = useImage ? image[i * 3 + 1] : 128;
    let b = useImage ? image[i * 3 + 2] : 128;
    const shown = mask === null || mask[i] === 1;
    if (shown) {
      const v = values[i];
      const t = Number.isFinite(v) ? normalise(v, range) : 0.5;
      const k = Math.round(t * 255) * 3;
      const alpha = signed ? a0 * Math.min(1, Math.abs(t - 0.5) * 2) : a0 * t;
      r = r * (1 - alpha) + lut[k] * alpha;
      g = g * (1 - alpha) + lut[k + 1] * alpha;
      b = b * (1 - alpha) + lut[k + 2] * alpha;
    } else if (hideRest) {
      [r, g, b] = HIDDEN;
    }
    out[o] = r;
    out[o + 1] = g;
    out[o + 2] = b;
    out[o + 3] = 255;
  }
  return out;
}

/** An integer zoom so a small map is drawn at about `target` pixels (a 32x32 image at 7x: 224x224). */
export function displayScale(width, height, target = 224) {
  return Math.max(1, Math.floor(target / Math.max(width, height, 1)));
}

/** RGBA pixels (width*height*4) enlarged `factor` times, each pixel a factor x factor block. */
export function upscaleNearest(rgba, width, height, factor) {
  if (factor === 1) return rgba;
  const outWidth = width * factor;
  const out = new Uint8ClampedArray(outWidth * height * factor * 4);
  for (let y = 0; y < height * factor; y++) {
    const sourceRow = Math.floor(y / factor) * width;
    for (let x = 0; x < outWidth; x++) {
      const s = (sourceRow + Math.floor(x / factor)) * 4;
      const o = (y * outWidth + x) * 4;
      out[o] = rgba[s];
      out[o + 1] = rgba[s + 1];
      out[o + 2] = rgba[s + 2];
      out[o + 3] = rgba[s + 3];
    }
  }
  return out;
}

/**
 * Superpixel borders at a zoom of `factor`: 1 on the last display column (row) of a source pixel whose right
 * (lower) neighbour has another label, so borders stay one display pixel thin whatever the zoom.
 */
export function scaledBoundaries(segments, width, height, factor) {
  const outWidth = width * factor;
  const edge = new Uint8Array(outWidth * height * factor);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = y * width + x;
      if (x + 1 < width && segments[i + 1] !== segments[i]) {
        for (let k = 0; k < factor; k++) edge[(y * factor + k) * outWidth + x * factor + factor - 1] = 1;
      }
      if (y + 1 < height && segments[i + width] !== segments[i]) {
        for (let k = 0; k < factor; k++) edge[(y * factor + factor - 1) * outWidth + x * factor + k] = 1;
      }
    }
  }
  return edge;
}

/** Paint `color` ([r, g, b]) into RGBA pixels wherever `mask` is 1 (in place; returns `rgba`). */
export function paintMask(rgba, mask, color = BOUNDARY) {
  for (let i = 0; i < mask.length; i++) {
    if (mask[i]) {
      rgba[i * 4] = color[0];
      rgba[i * 4 + 1] = color[1];
      rgba[i * 4 + 2] = color[2];
    }
  }
  return rgba;
}

/** One activation channel (values, h*w) as RGBA, min-max scaled (a constant channel is drawn dark). */
export function channelPixels(values, colormap = "inferno") {
  let low = Infinity;
  let high = -Infinity;
  for (const v of values) {
    if (v < low) low = v;
    if (v > high) high = v;
  }
  const span = high > low ? high - low : 0;
  const lut = colormapLUT(colormap, 256);
  const out = new Uint8ClampedArray(values.length * 4);
  for (let i = 0; i < values.length; i++) {
    const k = span > 0 ? Math.round(((values[i] - low) / span) * 255) * 3 : 0;
    out[i * 4] = lut[k];
    out[i * 4 + 1] = lut[k + 1];
    out[i * 4 + 2] = lut[k + 2];
    out[i * 4 + 3] = 255;
  }
  return out;
}

/** A number for a colour bar or table: 3 significant digits, exponent form when tiny or huge. */
export function formatValue(value) {
  if (!Number.isFinite(value)) return String(value);
  if (value === 0) return "0";
  const a = Math.abs(value);
  if (a >= 1e4 || a < 1e-3) return value.toExponential(2);
  return Number(value.toPrecision(3)).toString();
}

/** "computed in 123 ms (1,000 model evaluations)". */
export function timingText(elapsedMs, nEvals) {
  const ms = Math.round(Number(elapsedMs) || 0);
  const evals = Math.round(Number(nEvals) || 0);
  const plural = evals === 1 ? "evaluation" : "evaluations";
  return `computed in ${ms.toLocaleString("en-US")} ms (${evals.toLocaleString("en-US")} model ${plural})`;
}

/** The text of the status line: "idle", "computing 40%" or "error". */
export function statusText(status, progress) {
  if (status === "computing") {
    const p = Number(progress) || 0;
    return p > 0 ? `computing ${Math.round(p * 100)}%` : "computing";
  }
  return String(status || "idle");
}

// ---------------------------------------------------------------------------------------------------------------
// DOM helpers (used only inside render)
// ---------------------------------------------------------------------------------------------------------------

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function interactive(node) {
  // JupyterLab's command-mode shortcuts would otherwise swallow arrow keys and letters typed here.
  node.setAttribute("data-lm-suppress-shortcuts", "true");
  return node;
}

function putPixels(canvas, rgba, width, height) {
  canvas.width = width;
  canvas.height = height;
  canvas.getContext("2d").putImageData(new ImageData(rgba, width, height), 0, 0);
}

function imagePixels(decoded) {
  // (H, W, 3) uint8 -> RGBA
  const [h, w] = decoded.shape;
  const rgba = new Uint8ClampedArray(h * w * 4);
  for (let i = 0; i < h * w; i++) {
    rgba[i * 4] = decoded.values[i * 3];
    rgba[i * 4 + 1] = decoded.values[i * 3 + 1];
    rgba[i * 4 + 2] = decoded.values[i * 3 + 2];
    rgba[i * 4 + 3] = 255;
  }
  return rgba;
}

// ---------------------------------------------------------------------------------------------------------------
// render
// ---------------------------------------------------------------------------------------------------------------

function render({ model, el }) {
  const abort = new AbortController();
  const listen = (node, event, handler) => node.addEventListener(event, handler, { signal: abort.signal });
  const subscriptions = [];
  const on = (event, handler) => {
    model.on(event, handler);
    subscriptions.push([event, handler]);
  };
  const send = (name, value) => {
    model.set(name, value);
    model.save_changes();
  };

  // Browser-only view state: changing it redraws without a kernel round trip.
  const view = { opacity: 0.6, colormap: "auto", sign: "all", topK: 0, hideRest: false, boundaries: false };

  const root = element("div", "livexai-root");
  root.dataset.kind = model.get(TRAITS.kind) || "";
  const header = element("div", "livexai-header");
  const title = element("div", "livexai-title");
  const statusNode = element("span", "livexai-status");
  statusNode.setAttribute("role", "status");
  const progressOuter = element("div", "livexai-progress");
  const progressBar = element("div", "livexai-progress-bar");
  progressOuter.append(progressBar);
  header.append(title, statusNode, progressOuter);
  const errorNode = element("div", "livexai-error");
  errorNode.setAttribute("role", "alert");
  const strip = element("div", "livexai-strip");
  const body = element("div", "livexai-body");
  const side = element("div", "livexai-side");
  const controlsNode = element("div", "livexai-controls");
  const viewNode = element("div", "livexai-view-controls");
  const predictionsNode = element("div", "livexai-predictions");
  side.append(controlsNode, viewNode, predictionsNode);
  const main = element("div", "livexai-main");
  const panelsNode = element("div", "livexai-panels");
  const channelsNode = element("div", "livexai-channels");
  const correlationNode = element("div", "livexai-correlation");
  main.append(panelsNode, channelsNode, correlationNode);
  body.append(side, main);
  const info = element("div", "livexai-info");
  root.append(header, errorNode, strip, body, info);
  el.append(root);

  // -- parameter controls (kernel round trip) -------------------------------------------------------------------
  const controlInputs = new Map(); // name -> {update(value)}
  let controlSubscriptions = [];
  function buildControls() {
    controlsNode.replaceChildren();
    controlInputs.clear();
    for (const [event, handler] of controlSubscriptions) model.off(event, handler);
    controlSubscriptions = [];
    for (const spec of model.get(TRAITS.controls) || []) {
      const row = element("label", `livexai-control livexai-control-${spec.name}`);
      row.append(element("span", "livexai-control-label", spec.label || spec.name));
      if (spec.kind === "choice") {
        const select = interactive(element("select", `livexai-select livexai-select-${spec.name}`));
        for (const choice of spec.choices) {
          const option = element("option", null, choice);
          option.value = choice;
          select.append(option);
        }
        listen(select, "change", () => send(spec.name, select.value));
        row.append(select);
        controlInputs.set(spec.name, { update: (v) => (select.value = String(v)) });
      } else {
        const slider = interactive(element("input", `livexai-slider livexai-slider-${spec.name}`));
        slider.type = "range";
        const number = interactive(element("input", `livexai-number livexai-number-${spec.name}`));
        number.type = "number";
        for (const input of [slider, number]) {
          input.min = String(spec.min);
          input.max = String(spec.max);
          input.step = String(spec.step);
        }
        const parse = (text) => (spec.kind === "int" ? Math.round(Number(text)) : Number(text));
        listen(slider, "input", () => {
          number.value = slider.value;
          send(spec.name, parse(slider.value));
        });
        // The number box sends whatever is typed, even out of the slider's range: the kernel checks it and
        // refuses what is invalid with a message, which is the behaviour users should see.
        // Enter commits too (Chromium fires "change" for a number box only when it loses focus).
        listen(number, "keydown", (event) => {
          if (event.key === "Enter") number.blur();
        });
        listen(number, "change", () => {
          if (number.value.trim() === "" || !Number.isFinite(Number(number.value))) {
            number.value = String(model.get(spec.name));
            return;
          }
          send(spec.name, parse(number.value));
        });
        row.append(slider, number);
        controlInputs.set(spec.name, {
          update: (v) => {
            slider.value = String(v);
            number.value = String(v);
          },
        });
      }
      controlsNode.append(row);
      controlInputs.get(spec.name).update(model.get(spec.name));
      const handler = () => controlInputs.get(spec.name)?.update(model.get(spec.name));
      model.on(`change:${spec.name}`, handler);
      controlSubscriptions.push([`change:${spec.name}`, handler]);
    }
  }

  // -- view controls (browser only) -----------------------------------------------------------------------------
  function viewRow(labelText, className, input) {
    const row = element("label", `livexai-control ${className}-row`);
    row.append(element("span", "livexai-control-label", labelText), input);
    viewNode.append(row);
    return row;
  }
  const opacity = interactive(element("input", "livexai-opacity"));
  Object.assign(opacity, { type: "range", min: "0", max: "1", step: "0.05", value: String(view.opacity) });
  listen(opacity, "input", () => {
    view.opacity = Number(opacity.value);
    draw();
  });
  viewRow("opacity", "livexai-opacity", opacity);
  const colormap = interactive(element("select", "livexai-colormap"));
  for (const name of COLORMAPS) {
    const option = element("option", null, name);
    option.value = name;
    colormap.append(option);
  }
  listen(colormap, "change", () => {
    view.colormap = colormap.value;
    draw();
  });
  viewRow("colour map", "livexai-colormap", colormap);
  const sign = interactive(element("select", "livexai-sign"));
  for (const name of SIGNS) {
    const option = element("option", null, name === "all" ? "positive and negative" : `${name} only`);
    option.value = name;
    sign.append(option);
  }
  listen(sign, "change", () => {
    view.sign = sign.value;
    draw();
  });
  viewRow("show", "livexai-sign", sign);
  const topK = interactive(element("input", "livexai-topk"));
  Object.assign(topK, { type: "range", min: "0", max: "50", step: "1", value: "0" });
  const topKValue = element("span", "livexai-topk-value", "all");
  listen(topK, "input", () => {
    view.topK = Number(topK.value);
    draw();
  });
  viewRow("top superpixels", "livexai-topk", topK).append(topKValue);
  const hideRest = interactive(element("input", "livexai-hide-rest"));
  hideRest.type = "checkbox";
  listen(hideRest, "change", () => {
    view.hideRest = hideRest.checked;
    draw();
  });
  viewRow("hide the rest", "livexai-hide-rest", hideRest);
  const boundaries = interactive(element("input", "livexai-boundaries"));
  boundaries.type = "checkbox";
  listen(boundaries, "change", () => {
    view.boundaries = boundaries.checked;
    draw();
  });
  viewRow("superpixel borders", "livexai-boundaries", boundaries);

  // -- predictions (click one to explain that class) ------------------------------------------------------------
  function drawPredictions() {
    predictionsNode.replaceChildren();
    const predictions = model.get(TRAITS.predictions) || [];
    if (predictions.length === 0) return;
    predictionsNode.append(element("div", "livexai-section-title", "top predictions (click to explain)"));
    const panels = model.get(TRAITS.panels) || [];
    const shownTarget = model.get(TRAITS.target) ?? panels.find((p) => p.target !== null)?.target ?? predictions[0].index;
    for (const p of predictions) {
      const button = interactive(element("button", "livexai-pred"));
      button.type = "button";
      button.dataset.index = String(p.index);
      button.setAttribute("aria-pressed", String(p.index === shownTarget));
      const bar = element("span", "livexai-pred-bar");
      bar.style.width = `${Math.max(0, Math.min(1, p.probability)) * 100}%`;
      button.append(bar, element("span", "livexai-pred-label", p.label), element("span", "livexai-pred-value", `${(p.probability * 100).toFixed(1)}%`));
      listen(button, "click", () => send(TRAITS.target, p.index));
      predictionsNode.append(button);
    }
  }

  // -- panels ---------------------------------------------------------------------------------------------------
  const panelNodes = new Map(); // key -> nodes
  function panelNode(key) {
    let nodes = panelNodes.get(key);
    if (nodes) return nodes;
    const figure = element("figure", "livexai-panel");
    figure.dataset.key = key;
    const caption = element("figcaption", "livexai-panel-title");
    const canvas = element("canvas", "livexai-canvas");
    const bar = element("div", "livexai-colorbar");
    const barGradient = element("div", "livexai-colorbar-gradient");
    const barLabels = element("div", "livexai-colorbar-labels");
    bar.append(barGradient, barLabels);
    const panelInfo = element("div", "livexai-panel-info");
    figure.append(caption, canvas, bar, panelInfo);
    nodes = { figure, caption, canvas, barGradient, barLabels, panelInfo };
    panelNodes.set(key, nodes);
    return nodes;
  }

  function drawPanel(nodes, p, image) {
    const progressText = p.status === "partial" ? ` · ${Math.round((p.progress || 0) * 100)}%` : "";
    nodes.caption.textContent = `${p.title}${progressText}`;
    nodes.figure.dataset.status = p.status || "done";
    const map = decodeArray(p.map);
    if (!map) {
      nodes.panelInfo.textContent = p.note || (p.status === "error" ? "failed" : "computing…");
      nodes.canvas.classList.add("livexai-empty");
      if (image) putPixels(nodes.canvas, imagePixels(image), image.shape[1], image.shape[0]);
      nodes.barLabels.replaceChildren();
      return;
    }
    nodes.canvas.classList.remove("livexai-empty");
    const [height, width] = map.shape;
    const segments = decodeArray(p.segments);
    const weights = decodeArray(p.weights);
    const mask = pixelMask(map.values, {
      segments: segments && segments.values,
      weights: weights && weights.values,
      topK: view.topK,
      sign: view.sign,
    });
    const range = valueRange(map.values, p.signed);
    const name = resolveColormap(view.colormap, p.signed);
    const sameSize = image && image.shape[0] === height && image.shape[1] === width;
    const overlay = composeOverlay({
      image: sameSize ? image.values : null,
      values: map.values,
      width,
      height,
      mask,
      range,
      colormap: name,
      signed: p.signed,
      opacity: view.opacity,
      hideRest: view.hideRest,
    });
    // Small maps are drawn enlarged on the canvas itself, so superpixel borders can stay one pixel thin.
    const factor = displayScale(width, height);
    const rgba = upscaleNearest(overlay, width, height, factor);
    if (view.boundaries && segments) paintMask(rgba, scaledBoundaries(segments.values, width, height, factor));
    putPixels(nodes.canvas, rgba, width * factor, height * factor);
    nodes.barGradient.style.background = `linear-gradient(to right, ${colormapCss(name).join(", ")})`;
    const labels = p.signed ? [range.low, 0, range.high] : [range.low, range.high];
    nodes.barLabels.replaceChildren(...labels.map((v) => element("span", null, formatValue(v))));
    const note = p.note ? ` · ${p.note}` : "";
    nodes.panelInfo.textContent = `${timingText(p.elapsed_ms, p.n_evals)}${note}`;
  }

  function drawChannels(p) {
    channelsNode.replaceChildren();
    const channels = decodeArray(p.channels);
    const ids = decodeArray(p.channel_ids);
    if (!channels || !ids) return;
    const [count, h, w] = channels.shape;
    const chosen = model.get(TRAITS.channel);
    const large = element("canvas", "livexai-channel-large");
    const largeTitle = element("div", "livexai-section-title");
    const grid = element("div", "livexai-channel-grid");
    for (let c = 0; c < count; c++) {
      const values = channels.values.subarray(c * h * w, (c + 1) * h * w);
      const button = interactive(element("button", "livexai-channel"));
      button.type = "button";
      button.dataset.channel = String(ids.values[c]);
      button.title = `channel ${ids.values[c]}`;
      button.setAttribute("aria-pressed", String(ids.values[c] === chosen));
      const canvas = element("canvas");
      putPixels(canvas, channelPixels(values), w, h);
      button.append(canvas);
      listen(button, "click", () => send(TRAITS.channel, ids.values[c]));
      grid.append(button);
      if (ids.values[c] === chosen || (chosen < 0 && c === 0)) {
        putPixels(large, channelPixels(values), w, h);
        largeTitle.textContent = `channel ${ids.values[c]} (click a channel below to enlarge it)`;
      }
    }
    channelsNode.append(largeTitle, large, grid);
  }

  function drawCorrelation() {
    correlationNode.replaceChildren();
    const wire = model.get(TRAITS.correlation);
    const matrix = wire ? decodeArray(wire) : null;
    if (!matrix) return;
    const names = wire.names || [];
    const n = matrix.shape[0];
    const table = element("table", "livexai-correlation-table");
    table.append(element("caption", null, "rank correlation between maps (Spearman)"));
    const head = element("tr");
    head.append(element("th"));
    for (const name of names) head.append(element("th", null, name));
    table.append(head);
    for (let i = 0; i < n; i++) {
      const row = element("tr");
      row.append(element("th", null, names[i]));
      for (let j = 0; j < n; j++) {
        const v = matrix.values[i * n + j];
        const cell = element("td", null, Number.isFinite(v) ? v.toFixed(2) : "–");
        if (Number.isFinite(v)) cell.style.setProperty("--livexai-strength", String(Math.abs(v)));
        cell.dataset.sign = v < 0 ? "negative" : "positive";
        row.append(cell);
      }
      table.append(row);
    }
    correlationNode.append(table);
  }

  function drawStrip() {
    strip.replaceChildren();
    const thumbnails = model.get(TRAITS.thumbnails);
    if (!thumbnails || thumbnails.length === 0) return;
    const selected = model.get(TRAITS.selected);
    thumbnails.forEach((wire, index) => {
      const decoded = decodeArray(wire);
      const button = interactive(element("button", "livexai-thumb"));
      button.type = "button";
      button.dataset.index = String(index);
      button.setAttribute("aria-pressed", String(index === selected));
      const canvas = element("canvas");
      putPixels(canvas, imagePixels(decoded), decoded.shape[1], decoded.shape[0]);
      button.append(canvas);
      listen(button, "click", () => send(TRAITS.selected, index));
      strip.append(button);
    });
  }

  // -- whole view -----------------------------------------------------------------------------------------------
  function draw() {
    const image = decodeArray(model.get(TRAITS.image));
    const panels = model.get(TRAITS.panels) || [];
    const seen = new Set();
    let maxSegments = 0;
    for (const p of panels) {
      if (!p.map && p.channels) continue;
      const nodes = panelNode(p.key);
      seen.add(p.key);
      if (nodes.figure.parentNode !== panelsNode) panelsNode.append(nodes.figure);
      drawPanel(nodes, p, image);
      if (p.weights) maxSegments = Math.max(maxSegments, p.weights.shape[0]);
    }
    for (const [key, nodes] of panelNodes) {
      if (!seen.has(key)) {
        nodes.figure.remove();
        panelNodes.delete(key);
      }
    }
    const channelPanel = panels.find((p) => p.channels);
    if (channelPanel) drawChannels(channelPanel);
    else channelsNode.replaceChildren();
    topK.disabled = maxSegments === 0;
    if (maxSegments > 0) topK.max = String(maxSegments);
    topKValue.textContent = view.topK > 0 ? String(view.topK) : "all";
  }

  function drawStatus() {
    const status = model.get(TRAITS.status);
    statusNode.textContent = statusText(status, model.get(TRAITS.progress));
    root.dataset.status = status;
    progressBar.style.width = `${Math.round((Number(model.get(TRAITS.progress)) || 0) * 100)}%`;
    progressOuter.dataset.active = String(status === "computing");
    const message = model.get(TRAITS.error) || "";
    errorNode.textContent = message;
    errorNode.hidden = message === "";
    info.textContent = status === "idle" || model.get(TRAITS.nEvals) > 0 ? timingText(model.get(TRAITS.elapsedMs), model.get(TRAITS.nEvals)) : "";
  }

  function drawTitle() {
    title.textContent = model.get(TRAITS.title) || "";
  }

  buildControls();
  drawTitle();
  drawStatus();
  drawPredictions();
  drawStrip();
  draw();
  drawCorrelation();
  on(`change:${TRAITS.controls}`, buildControls);
  on(`change:${TRAITS.title}`, drawTitle);
  for (const name of [TRAITS.status, TRAITS.error, TRAITS.progress, TRAITS.elapsedMs, TRAITS.nEvals]) on(`change:${name}`, drawStatus);
  on(`change:${TRAITS.panels}`, () => {
    draw();
    drawPredictions();
  });
  on(`change:${TRAITS.image}`, draw);
  on(`change:${TRAITS.channel}`, draw);
  on(`change:${TRAITS.predictions}`, drawPredictions);
  on(`change:${TRAITS.target}`, drawPredictions);
  on(`change:${TRAITS.thumbnails}`, drawStrip);
  on(`change:${TRAITS.selected}`, drawStrip);
  on(`change:${TRAITS.correlation}`, drawCorrelation);

  return () => {
    abort.abort();
    for (const [event, handler] of [...subscriptions, ...controlSubscriptions]) model.off(event, handler);
    root.remove();
  };
}

export default { render };
