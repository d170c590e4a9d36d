// @ts-check
// livexai front end: one plain ES module for every livexai widget (anywidget).
//
// The pure functions below (array decoding, colour maps, superpixel selection, overlay composition) touch no DOM
// and are tested with `node --test js/`. `render` builds the view from one small function per section (status,
// controls, view controls, strip, predictions, panels with their faithfulness curves, sanity strip, correlation
// table), each returning its `update`.
// Everything that only changes how a result is drawn (opacity, colour map, top-k superpixels, sign filter,
// hide-the-rest, boundaries) happens here, with no round trip to the kernel. Labels and messages are always set as
// text (textContent), never parsed as HTML.

// ---------------------------------------------------------------------------------------------------------------
// What Python sends
// ---------------------------------------------------------------------------------------------------------------

/**
 * An array as a binary buffer: `to_wire()` in src/livexai/widgets/_serialize.py. anywidget hands `data` over as a
 * DataView; tests pass ArrayBuffers and typed arrays too. `dtype` is one of DTYPES' keys (WIRE_DTYPES in Python).
 * @typedef {object} WireArray
 * @property {DataView | ArrayBuffer | ArrayBufferView} data
 * @property {string} dtype
 * @property {number[]} shape
 */

/**
 * What a WireArray decodes to.
 * @typedef {Float32Array | Int32Array | Uint8Array} Values
 */
/**
 * A decoded WireArray (`decodeArray`).
 * @typedef {{ values: Values, shape: number[] }} Decoded
 */

/**
 * One drawn map: `panel()` in src/livexai/widgets/_base.py (its `Panel` TypedDict). `map` is (H, W) float32,
 * `segments` (H, W) int32 and `weights` (S,) float32 (superpixel methods only). The activation grid's panel adds
 * `channels` (k, h, w) float32 and `channel_ids` (k,) int32: `_channels_panel()` in src/livexai/widgets/layer.py.
 * @typedef {object} Panel
 * @property {string} key
 * @property {string} title
 * @property {"done" | "partial" | "computing" | "error"} status
 * @property {number} progress
 * @property {string} note
 * @property {string | null} method
 * @property {WireArray | null} map
 * @property {WireArray | null} segments
 * @property {WireArray | null} weights
 * @property {boolean} signed
 * @property {number} elapsed_ms
 * @property {number} n_evals
 * @property {number | null} target
 * @property {WireArray} [channels]
 * @property {WireArray} [channel_ids]
 * @property {boolean} [sanity] whether the panel has a "sanity check" button (LayerWidget's Grad-CAM, Explorer)
 * @property {Pointing} [pointing] the Explorer given ground-truth masks: does the map point at the object?
 */

/**
 * Does a map point at the object: `_pointing()` in src/livexai/widgets/explorer.py (`Pointing` TypedDict in
 * _base.py). `hit`: the pointing game within `tolerance` pixels; `energy`: share of the positive evidence on the
 * object; `share`: the object's share of the image (what evidence spread evenly would score).
 * @typedef {{ hit: boolean, energy: number, tolerance: number, share: number }} Pointing
 */

/**
 * One map's deletion and insertion curves (the `curves` trait maps panel keys to these): `_curves()` in
 * src/livexai/widgets/_base.py (its `Curves` TypedDict). Once "done", three (n + 1,) float32 arrays and the AUCs.
 * @typedef {object} Curves
 * @property {"computing" | "done" | "error"} status
 * @property {string} note
 * @property {WireArray} [fractions]
 * @property {WireArray} [deletion]
 * @property {WireArray} [insertion]
 * @property {number} [deletion_auc]
 * @property {number} [insertion_auc]
 */

/**
 * A sanity check as drawn (the `sanity` trait): `_strip()` in src/livexai/widgets/_base.py (`SanityStrip`).
 * `maps` (S, h, w) float32 is the original map then the randomisation steps shown; `layers` and `similarity` (S,)
 * float32 go with them; `image` (h, w, 3) uint8 is drawn under them. `passed` is null until the check is complete.
 * @typedef {object} SanityStrip
 * @property {"computing" | "done" | "error"} status
 * @property {string} key
 * @property {string} title
 * @property {string} summary
 * @property {boolean | null} passed
 * @property {number} done
 * @property {number} total
 * @property {string[]} layers
 * @property {WireArray | null} similarity
 * @property {WireArray | null} maps
 * @property {WireArray | null} image
 * @property {boolean} signed
 */

/**
 * A parameter's control (the `controls` trait): `Param.control()` in src/livexai/widgets/_params.py (its
 * `Control` TypedDict). A "choice" has `choices`; an "int" or "float" has the slider's `min`, `max` and `step`.
 * @typedef {object} Control
 * @property {string} name
 * @property {"int" | "float" | "choice"} kind
 * @property {string} label
 * @property {string[]} [choices]
 * @property {number} [min]
 * @property {number} [max]
 * @property {number} [step]
 */

/**
 * One of the top classes (the `predictions` trait): `top_predictions()` in src/livexai/widgets/_base.py.
 * @typedef {{ index: number, label: string, probability: number }} Prediction
 */

/**
 * The Explorer's rank correlations between its maps, (M, M) float32, with the methods' names: set by
 * `Explorer._compute` in src/livexai/widgets/explorer.py (from `rank_correlations()`).
 * @typedef {WireArray & { names: string[], caption?: string }} Correlation
 */

/**
 * A small (h, w, 3) uint8 copy of one of the Explorer's images: `_thumbnail()` in src/livexai/widgets/explorer.py.
 * @typedef {WireArray} Thumbnail
 */

/**
 * The part of anywidget's model that `render` uses (its `AnyModel`, typed here so nothing needs resolving).
 * @typedef {object} Model
 * @property {(name: string) => any} get
 * @property {(name: string, value: unknown) => void} set
 * @property {(event: string, handler: () => void) => void} on
 * @property {(event: string, handler: () => void) => void} off
 * @property {() => void} save_changes
 * @property {(content: object) => void} send a custom message to the kernel (kinds: MESSAGES)
 */

// Trait names shared with Python: the synced traits of ExplainerWidget (src/livexai/widgets/_base.py), plus those
// of one widget class (marked; widgets/layer.py, widgets/explorer.py). With PARAMETERS below these are every
// trait Python syncs: tests/test_frontend_contract.py checks that the two sides agree.
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
  featurevis: "featurevis", // LayerWidget (what the chosen channel looks for)
  thumbnails: "thumbnails", // Explorer
  selected: "selected", // Explorer (a parameter, drawn as the strip rather than a control)
  correlation: "correlation", // Explorer
  curves: "curves",
  sanity: "sanity",
  table: "table", // TabularExplorer
  local: "local", // TabularExplorer
  globalView: "global_view", // TabularExplorer
  view: "view", // TabularExplorer (a parameter, drawn as the tabs rather than a control)
  text: "text", // TextWidget
  sentence: "sentence", // TextWidget (what the person typed)
});

// Kinds of the custom messages sent to the kernel (src/livexai/widgets/_base.py: SANITY_CHECK).
export const MESSAGES = Object.freeze({ sanityCheck: "sanity_check" });

// Parameter traits drawn as controls (declared in src/livexai/widgets/lime.py, shap.py, layer.py, explorer.py):
// the kernel may change them (or refuse a value), so `render` listens to each and shows the kernel's value.
export const PARAMETERS = Object.freeze([
  "n_segments", // LimeWidget, ShapWidget, Explorer
  "n_samples", // LimeWidget, ShapWidget, Explorer, TextWidget
  "segmentation", // LimeWidget
  "baseline", // LimeWidget
  "kernel_width", // LimeWidget
  "method", // ShapWidget, LayerWidget, TextWidget
  "background_size", // ShapWidget, Explorer
  "layer", // LayerWidget, TextWidget
  "head", // TextWidget
  "n_channels", // LayerWidget
  "optimisation", // LayerWidget
  "steps", // LayerWidget
  "summary", // TabularExplorer
  "depth", // TabularExplorer
]);

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
// What a map is drawn over: a faded greyscale copy of the image (as shap's image plot and Captum's blended heat
// map do, so the image's own colours do not fight the map's), or the image in colour.
export const UNDERLAYS = Object.freeze(["grey", "colour"]);
/** @typedef {[number, number, number]} RGB */
/** @type {RGB} */
const HIDDEN = [0, 0, 0]; // what hide-the-rest paints outside the selection (lime's get_image_and_mask: black)
/** @type {RGB} */
const BOUNDARY = [250, 250, 250]; // superpixel borders: a thin light line...
/** @type {RGB} */
const BOUNDARY_OUTLINE = [24, 24, 24]; // ...with a dark outline either side, so they show on any image
const LUMA = Object.freeze([0.299, 0.587, 0.114]); // greyscale weights (ITU-R BT.601, as PIL's convert("L"))
const UNDERLAY_FADE = 0.6; // how far the greyscale underlay is pulled toward the colour map's zero colour
const CLIP_PERCENTILE = 99; // maps are scaled to this percentile of |value| (signed) or value (non-negative)
const NO_IMAGE_GREY = 128; // what a map is drawn over when no image of its size is there: mid-grey
const LUT_SIZE = 256; // colours in a colour map's lookup table: one per 8-bit level
const COLORBAR_STEPS = 9; // colours in a colour bar's CSS gradient (as many as the maps' stops)
const DISPLAY_SIZE = 224; // pixels a small map is enlarged to, about (the panels' --livexai-size in widget.css)
const TOPK_SLIDER_MAX = 50; // the top-superpixels slider's range until a map says how many superpixels it has
const OPACITY_STEP = 0.05; // the opacity slider's step
const SIGNIFICANT_DIGITS = 3; // digits of the numbers on colour bars
const PLAIN_NUMBERS = Object.freeze({ low: 1e-3, high: 1e4 }); // |values| written without an exponent
const NO_BREAK = "\u2060"; // a word joiner: no line break here
// The faithfulness chart under a panel, in SVG user units (it scales with the panel's width).
const CHART = Object.freeze({ width: 200, height: 60, pad: 2 });
const SVG_NS = "http://www.w3.org/2000/svg";

/**
 * Browser-only view state; changing it redraws without a kernel round trip.
 * @typedef {object} View
 * @property {number} opacity
 * @property {string} colormap one of COLORMAPS
 * @property {string} [underlay] one of UNDERLAYS (missing: "grey")
 * @property {string} sign one of SIGNS
 * @property {number} topK superpixels kept (0: all)
 * @property {boolean} hideRest
 * @property {boolean} boundaries
 */
/**
 * What a new view starts with: every superpixel of either sign over the faded grey image, auto colours, and an
 * opacity at which the strongest evidence shows in nearly its full colour.
 * @type {Readonly<View>}
 */
const DEFAULT_VIEW = Object.freeze({
  opacity: 0.8,
  colormap: "auto",
  underlay: "grey",
  sign: "all",
  topK: 0,
  hideRest: false,
  boundaries: false,
});

// ---------------------------------------------------------------------------------------------------------------
// Pure functions
// ---------------------------------------------------------------------------------------------------------------

/**
 * Decode `{data, dtype, shape}` (data: DataView, ArrayBuffer or typed array) into `{values, shape}`.
 * @param {WireArray | null | undefined} wire
 * @returns {Decoded | null}
 */
export function decodeArray(wire) {
  if (wire === null || wire === undefined) return null;
  const Ctor = DTYPES[/** @type {keyof typeof DTYPES} */ (wire.dtype)];
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

/**
 * "#rrggbb" -> [r, g, b].
 * @param {string} hex
 * @returns {RGB}
 */
export function hexToRgb(hex) {
  const n = parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

/**
 * The colour map actually used: "auto" is red-blue for signed maps and inferno for non-negative ones (CAM).
 * @param {string} name
 * @param {boolean} signed
 * @returns {string}
 */
export function resolveColormap(name, signed) {
  if (name === "auto" || !(name in STOPS)) return signed ? "red-blue" : "inferno";
  return name;
}

/**
 * A lookup table of `size` RGB colours (Uint8Array, size*3) interpolated linearly between the map's stops.
 * @param {string} name
 * @param {number} [size]
 * @returns {Uint8Array}
 */
export function colormapLUT(name, size = LUT_SIZE) {
  const stops = (STOPS[/** @type {keyof typeof STOPS} */ (name)] || STOPS.inferno).map(hexToRgb);
  const lut = new Uint8Array(size * 3);
  for (let i = 0; i < size; i++) {
    const position = (i / (size - 1)) * (stops.length - 1);
    const k = Math.min(Math.floor(position), stops.length - 2);
    const f = position - k;
    for (let c = 0; c < 3; c++) lut[i * 3 + c] = Math.round(stops[k][c] * (1 - f) + stops[k + 1][c] * f);
  }
  return lut;
}

/**
 * CSS colours along a map, for a colour bar's gradient.
 * @param {string} name
 * @param {number} [steps]
 * @returns {string[]}
 */
export function colormapCss(name, steps = COLORBAR_STEPS) {
  const lut = colormapLUT(name, steps);
  return Array.from({ length: steps }, (_, i) => `rgb(${lut[i * 3]}, ${lut[i * 3 + 1]}, ${lut[i * 3 + 2]})`);
}

/**
 * The values a colour map spans; `robustRange` adds the map's true extremes and whether values lie beyond the span.
 * @typedef {{ low: number, high: number, min?: number, max?: number, clipped?: boolean }} Range
 */

/**
 * The value range a colour map spans. Signed maps: symmetric [-m, m] with m = max |v| (zero in the middle, so
 * colour strength compares across signs). Non-negative maps: [min(0, lowest), highest]. Never empty.
 * @param {ArrayLike<number>} values
 * @param {boolean} signed
 * @returns {Range}
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

/**
 * `value` scaled to [0, 1] over `range`, clipped.
 * @param {number} value
 * @param {Range} range
 * @returns {number}
 */
export function normalise(value, range) {
  const t = (value - range.low) / (range.high - range.low);
  return t < 0 ? 0 : t > 1 ? 1 : t;
}

/**
 * The `percentile`-th percentile of `values` (finite ones; the nearest-rank method, so at p99 a single outlier
 * among 100 or more values never moves it), or NaN if there are none. `magnitude` ranks |value| instead.
 * @param {ArrayLike<number>} values
 * @param {number} percentile in [0, 100]
 * @param {boolean} [magnitude]
 * @returns {number}
 */
export function percentileOf(values, percentile, magnitude = false) {
  const finite = [];
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (Number.isFinite(v)) finite.push(magnitude ? Math.abs(v) : v);
  }
  if (finite.length === 0) return NaN;
  const sorted = Float64Array.from(finite).sort();
  const rank = Math.ceil((Math.max(0, Math.min(100, percentile)) / 100) * sorted.length) - 1;
  return sorted[Math.max(0, rank)];
}

/**
 * A robust colour range: like `valueRange`, but the end is the `percentile`-th percentile of |value| (signed maps,
 * still symmetric about zero) or of value (non-negative maps), so a few extreme pixels do not wash out the rest;
 * values beyond it are clipped to the end colour. Falls back to the extremes where the percentile is zero (a map
 * that is zero almost everywhere). Also returns the true `min` and `max` and whether anything was `clipped`.
 * @param {ArrayLike<number>} values
 * @param {boolean} signed
 * @param {number} [percentile]
 * @returns {Required<Range>}
 */
export function robustRange(values, signed, percentile = CLIP_PERCENTILE) {
  const full = valueRange(values, signed);
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < values.length; i++) {
    if (Number.isFinite(values[i])) {
      min = Math.min(min, values[i]);
      max = Math.max(max, values[i]);
    }
  }
  if (!Number.isFinite(min)) return { ...full, min: 0, max: 0, clipped: false };
  const end = percentileOf(values, percentile, signed);
  if (signed) {
    const m = end > 0 && end < full.high ? end : full.high;
    return { low: -m, high: m, min, max, clipped: m < full.high };
  }
  const high = end > full.low && end < full.high ? end : full.high;
  return { low: full.low, high, min, max, clipped: high < full.high };
}

/**
 * The texts of a colour bar: its labels (ends, and zero in the middle of a signed map) and, if the range clips
 * the map, a note with the percentile and the true range ("clipped at p99; range -3.1…0.42").
 * @param {Range} range
 * @param {boolean} signed
 * @param {number} [percentile]
 * @returns {{ labels: string[], note: string }}
 */
export function colorbarText(range, signed, percentile = CLIP_PERCENTILE) {
  const ends = signed ? [range.low, 0, range.high] : [range.low, range.high];
  const low = formatValue(range.min ?? range.low);
  const high = formatValue(range.max ?? range.high);
  // Word joiners keep the range on one line ("-0.2…0.4" would otherwise break after the ellipsis).
  const note = range.clipped ? `clipped at p${percentile}; range ${low}${NO_BREAK}…${NO_BREAK}${high}` : "";
  return { labels: ends.map(formatValue), note };
}

/**
 * A greyscale copy of RGB or RGBA pixels (`channels` 3 or 4; alpha kept), faded toward the grey level `tone`:
 * each pixel's luma moves `fade` of the way to `tone`. Drawn under a map, the image keeps its shapes but not its
 * colours, so a red object cannot hide red evidence.
 * @param {ArrayLike<number>} pixels
 * @param {{ channels?: number, fade?: number, tone?: number }} [options]
 * @returns {Uint8ClampedArray}
 */
export function fadeToGrey(pixels, { channels = 4, fade = UNDERLAY_FADE, tone = LUT_SIZE - 1 } = {}) {
  const out = new Uint8ClampedArray(pixels.length);
  const keep = 1 - Math.max(0, Math.min(1, fade));
  for (let o = 0; o + channels <= pixels.length; o += channels) {
    const luma = LUMA[0] * pixels[o] + LUMA[1] * pixels[o + 1] + LUMA[2] * pixels[o + 2];
    out[o] = out[o + 1] = out[o + 2] = tone + (luma - tone) * keep;
    if (channels === 4) out[o + 3] = pixels[o + 3];
  }
  return out;
}

/**
 * The grey level of a colour map's "no evidence" colour (zero: the middle of a signed map, the start of a
 * non-negative one), which the greyscale underlay fades toward: white-ish under red-blue, black under inferno, so
 * zero evidence looks like the map's zero and strong evidence stands out.
 * @param {string} colormap
 * @param {boolean} signed
 * @returns {number}
 */
export function zeroTone(colormap, signed) {
  const lut = colormapLUT(colormap, LUT_SIZE);
  const k = (signed ? Math.round((LUT_SIZE - 1) / 2) : 0) * 3;
  return LUMA[0] * lut[k] + LUMA[1] * lut[k + 1] + LUMA[2] * lut[k + 2];
}

/**
 * Which superpixels to show: a flag (Uint8Array, one per weight) for the `topK` strongest of those allowed by
 * `sign` ("positive": weight > 0, ranked by weight; "negative": weight < 0, most negative first; "all": any
 * non-zero weight, ranked by |weight|). `topK` <= 0 keeps every allowed superpixel. Ties keep index order.
 * @param {ArrayLike<number>} weights
 * @param {{ topK?: number, sign?: string }} [options]
 * @returns {Uint8Array}
 */
export function selectSegments(weights, { topK = 0, sign = "all" } = {}) {
  const flags = new Uint8Array(weights.length);
  const allowed = [];
  for (let i = 0; i < weights.length; i++) {
    const w = weights[i];
    if ((sign === "positive" && w > 0) || (sign === "negative" && w < 0) || (sign === "all" && w !== 0)) allowed.push(i);
  }
  /** @type {(i: number) => number} */
  const score = sign === "positive" ? (i) => weights[i] : sign === "negative" ? (i) => -weights[i] : (i) => Math.abs(weights[i]);
  allowed.sort((a, b) => score(b) - score(a) || a - b);
  const keep = topK > 0 ? Math.min(topK, allowed.length) : allowed.length;
  for (let j = 0; j < keep; j++) flags[allowed[j]] = 1;
  return flags;
}

/**
 * Pixels to colour (Uint8Array of 0/1, one per pixel). With superpixels (`segments` labels and `weights`), the
 * selected superpixels; otherwise a per-pixel sign filter (top-k does not apply to pixel maps).
 * @param {ArrayLike<number>} values
 * @param {{ segments?: ArrayLike<number> | null, weights?: ArrayLike<number> | null, topK?: number,
 *   sign?: string }} [options]
 * @returns {Uint8Array}
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
 * @param {{ image?: ArrayLike<number> | null, values: ArrayLike<number>, width: number, height: number,
 *   mask?: ArrayLike<number> | null, range: Range, colormap?: string, signed?: boolean, opacity?: number,
 *   hideRest?: boolean }} options
 * @returns {Uint8ClampedArray}
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
  opacity = DEFAULT_VIEW.opacity,
  hideRest = false,
}) {
  const n = width * height;
  if (values.length !== n) throw new Error(`map has ${values.length} values, expected ${width}x${height}`);
  const useImage = image !== null && image.length === n * 3;
  const lut = colormapLUT(colormap, LUT_SIZE);
  const out = new Uint8ClampedArray(n * 4);
  const a0 = Math.max(0, Math.min(1, opacity));
  for (let i = 0; i < n; i++) {
    const o = i * 4;
    let r = useImage ? image[i * 3] : NO_IMAGE_GREY;
    let g = useImage ? image[i * 3 + 1] : NO_IMAGE_GREY;
    let b = useImage ? image[i * 3 + 2] : NO_IMAGE_GREY;
    const shown = mask === null || mask[i] === 1;
    if (shown) {
      const v = values[i];
      const t = Number.isFinite(v) ? normalise(v, range) : 0.5;
      const k = Math.round(t * (LUT_SIZE - 1)) * 3;
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

/**
 * An integer zoom so a small map is drawn at about `target` pixels (a 32x32 image at 7x: 224x224).
 * @param {number} width
 * @param {number} height
 * @param {number} [target]
 * @returns {number}
 */
export function displayScale(width, height, target = DISPLAY_SIZE) {
  return Math.max(1, Math.floor(target / Math.max(width, height, 1)));
}

/**
 * RGBA pixels (width*height*4) enlarged `factor` times, each pixel a factor x factor block.
 * @param {Uint8ClampedArray} rgba
 * @param {number} width
 * @param {number} height
 * @param {number} factor
 * @returns {Uint8ClampedArray}
 */
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
 * @param {ArrayLike<number>} segments
 * @param {number} width
 * @param {number} height
 * @param {number} factor
 * @returns {Uint8Array}
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

/**
 * A (width*height) 0/1 mask grown by one pixel to its four neighbours: a border's outline.
 * @param {ArrayLike<number>} mask
 * @param {number} width
 * @param {number} height
 * @returns {Uint8Array}
 */
export function dilateMask(mask, width, height) {
  const out = new Uint8Array(width * height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = y * width + x;
      if (!mask[i]) continue;
      out[i] = 1;
      if (x > 0) out[i - 1] = 1;
      if (x + 1 < width) out[i + 1] = 1;
      if (y > 0) out[i - width] = 1;
      if (y + 1 < height) out[i + width] = 1;
    }
  }
  return out;
}

/**
 * Paint `color` ([r, g, b]) into RGBA pixels wherever `mask` is 1 (in place; returns `rgba`).
 * @param {Uint8ClampedArray} rgba
 * @param {ArrayLike<number>} mask
 * @param {RGB} [color]
 * @returns {Uint8ClampedArray}
 */
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

/**
 * A map with its view settings applied, ready for a canvas: scaled by `robustRange`, masked by the superpixel or
 * sign filter, blended over `image` when it has the map's size (a faded greyscale copy unless the view's underlay
 * is "colour"), enlarged by `displayScale` (so superpixel borders stay one pixel thin) and outlined if asked. Returns the pixels, their size, and the range and colour map a colour bar shows.
 * @param {Decoded} map (H, W)
 * @param {{ segments: Decoded | null, weights: Decoded | null, image: Decoded | null, signed: boolean }} data
 * @param {View} view
 * @returns {{ rgba: Uint8ClampedArray, width: number, height: number, range: Range, colormap: string }}
 */
export function mapPixels(map, { segments, weights, image, signed }, view) {
  const [height, width] = map.shape;
  const mask = pixelMask(map.values, {
    segments: segments && segments.values,
    weights: weights && weights.values,
    topK: view.topK,
    sign: view.sign,
  });
  const range = robustRange(map.values, signed);
  const colormap = resolveColormap(view.colormap, signed);
  const sameSize = image && image.shape[0] === height && image.shape[1] === width;
  const grey = view.underlay !== "colour";
  const underlay = !sameSize
    ? null
    : grey
      ? fadeToGrey(image.values, { channels: 3, tone: zeroTone(colormap, signed) })
      : image.values;
  const overlay = composeOverlay({
    image: underlay,
    values: map.values,
    width,
    height,
    mask,
    range,
    colormap,
    signed,
    opacity: view.opacity,
    hideRest: view.hideRest,
  });
  const factor = displayScale(width, height);
  const rgba = upscaleNearest(overlay, width, height, factor);
  if (view.boundaries && segments) {
    const edge = scaledBoundaries(segments.values, width, height, factor);
    paintMask(rgba, dilateMask(edge, width * factor, height * factor), BOUNDARY_OUTLINE);
    paintMask(rgba, edge, BOUNDARY);
  }
  return { rgba, width: width * factor, height: height * factor, range, colormap };
}

/**
 * An (H, W, 3) uint8 image as RGBA pixels.
 * @param {Decoded} decoded
 * @returns {Uint8ClampedArray}
 */
export function imagePixels(decoded) {
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

/**
 * One activation channel (values, h*w) as RGBA, min-max scaled (a constant channel is drawn dark).
 * @param {ArrayLike<number>} values
 * @param {string} [colormap]
 * @returns {Uint8ClampedArray}
 */
export function channelPixels(values, colormap = "inferno") {
  let low = Infinity;
  let high = -Infinity;
  for (let i = 0; i < values.length; i++) {
    if (values[i] < low) low = values[i];
    if (values[i] > high) high = values[i];
  }
  const span = high > low ? high - low : 0;
  const lut = colormapLUT(colormap, LUT_SIZE);
  const out = new Uint8ClampedArray(values.length * 4);
  for (let i = 0; i < values.length; i++) {
    const k = span > 0 ? Math.round(((values[i] - low) / span) * (LUT_SIZE - 1)) * 3 : 0;
    out[i * 4] = lut[k];
    out[i * 4 + 1] = lut[k + 1];
    out[i * 4 + 2] = lut[k + 2];
    out[i * 4 + 3] = 255;
  }
  return out;
}

/**
 * The most superpixels any panel has (0: no superpixel maps), which bounds the top-k slider.
 * @param {Panel[]} panels
 * @returns {number}
 */
export function segmentCount(panels) {
  return panels.reduce((most, p) => (p.weights ? Math.max(most, p.weights.shape[0]) : most), 0);
}

/**
 * The class whose prediction shows as pressed: the chosen target, else the one the panels explain, else the top one.
 * @param {number | null} target
 * @param {Panel[]} panels
 * @param {Prediction[]} predictions (not empty)
 * @returns {number}
 */
export function shownTarget(target, panels, predictions) {
  return target ?? panels.find((p) => p.target !== null)?.target ?? predictions[0].index;
}

/**
 * A number typed or slid into a parameter's control: rounded for an "int" parameter.
 * @param {Control["kind"]} kind
 * @param {string} text
 * @returns {number}
 */
export function controlValue(kind, text) {
  return kind === "int" ? Math.round(Number(text)) : Number(text);
}

/**
 * A panel's caption: its title, with the progress of a partial result ("LIME · 40%").
 * @param {Panel} panel
 * @returns {string}
 */
export function panelCaption(panel) {
  const progress = panel.status === "partial" ? ` · ${Math.round((panel.progress || 0) * 100)}%` : "";
  return `${panel.title}${progress}`;
}

/**
 * The line under a panel: timing and note once there is a map, else the note or what is happening.
 * @param {Panel} panel
 * @returns {string}
 */
export function panelInfoText(panel) {
  if (!panel.map) return panel.note || (panel.status === "error" ? "failed" : "computing…");
  const note = panel.note ? ` · ${panel.note}` : "";
  return `${timingText(panel.elapsed_ms, panel.n_evals)}${note}`;
}

/**
 * A number for a colour bar or table: 3 significant digits, exponent form when tiny or huge.
 * @param {number} value
 * @returns {string}
 */
export function formatValue(value) {
  if (!Number.isFinite(value)) return String(value);
  if (value === 0) return "0";
  const a = Math.abs(value);
  if (a >= PLAIN_NUMBERS.high || a < PLAIN_NUMBERS.low) return value.toExponential(SIGNIFICANT_DIGITS - 1);
  return Number(value.toPrecision(SIGNIFICANT_DIGITS)).toString();
}

/**
 * "computed in 123 ms (1,000 model evaluations)".
 * @param {unknown} elapsedMs
 * @param {unknown} nEvals
 * @returns {string}
 */
export function timingText(elapsedMs, nEvals) {
  const ms = Math.round(Number(elapsedMs) || 0);
  const evals = Math.round(Number(nEvals) || 0);
  const plural = evals === 1 ? "evaluation" : "evaluations";
  return `computed in ${ms.toLocaleString("en-US")} ms (${evals.toLocaleString("en-US")} model ${plural})`;
}

/**
 * The text of the status line: "idle", "computing 40%" or "error".
 * @param {string} status
 * @param {unknown} progress
 * @returns {string}
 */
export function statusText(status, progress) {
  if (status === "computing") {
    const p = Number(progress) || 0;
    return p > 0 ? `computing ${Math.round(p * 100)}%` : "computing";
  }
  return String(status || "idle");
}

/**
 * An SVG polyline's `points` for a curve of `scores` over `fractions` (both in [0, 1] along x) in a chart of
 * `width` x `height` with `pad` units inside its edges; y runs from 0 (bottom) to `top` (a score above it is
 * drawn at the top). Non-finite scores are skipped.
 * @param {ArrayLike<number>} fractions
 * @param {ArrayLike<number>} scores
 * @param {{ width?: number, height?: number, pad?: number, top?: number }} [options]
 * @returns {string}
 */
export function curvePoints(fractions, scores, { width = CHART.width, height = CHART.height, pad = CHART.pad, top = 1 } = {}) {
  const points = [];
  const span = top > 0 ? top : 1;
  for (let i = 0; i < Math.min(fractions.length, scores.length); i++) {
    if (!Number.isFinite(scores[i]) || !Number.isFinite(fractions[i])) continue;
    const x = pad + Math.max(0, Math.min(1, fractions[i])) * (width - 2 * pad);
    const y = height - pad - Math.max(0, Math.min(1, scores[i] / span)) * (height - 2 * pad);
    points.push(`${+x.toFixed(2)},${+y.toFixed(2)}`);
  }
  return points.join(" ");
}

/**
 * The top of a faithfulness chart's y axis: 1 for probabilities, else the highest score (logits may exceed 1).
 * @param {ArrayLike<number>[]} curves
 * @returns {number}
 */
export function chartTop(curves) {
  let top = 1;
  for (const scores of curves) for (let i = 0; i < scores.length; i++) if (scores[i] > top) top = scores[i];
  return top;
}

// What the faithfulness chart under a panel shows (its legend gives each curve's AUC).
export const CURVES_CAPTION = "class probability as the map's top pixels are removed or revealed";

/**
 * The legend lines of a panel's faithfulness curves: each curve's AUC and which way is better.
 * @param {Curves} curves
 * @returns {{ deletion: string, insertion: string }}
 */
export function curveLegend(curves) {
  const auc = (/** @type {number | undefined} */ value) => (Number.isFinite(value) ? Number(value).toFixed(2) : "–");
  return {
    deletion: `deletion AUC ${auc(curves.deletion_auc)} (lower is better)`,
    insertion: `insertion AUC ${auc(curves.insertion_auc)} (higher is better)`,
  };
}

/**
 * A share as a whole percentage.
 * @param {number} value
 * @returns {string}
 */
function percent(value) {
  return `${Math.round(value * 100)}%`;
}

/**
 * The "points at the object" line under a panel: the pointing game's verdict and the share of the evidence on the
 * object, with the object's share of the image beside it (what evidence spread evenly would score).
 * @param {Pointing} pointing
 * @returns {string}
 */
export function pointingText(pointing) {
  const verdict = pointing.hit ? "points at the object" : "misses the object";
  return `${verdict} · ${percent(pointing.energy)} of its evidence on it (object: ${percent(pointing.share)} of the image)`;
}

/**
 * The tooltip of the "points at the object" line: how both numbers are measured.
 * @param {Pointing} pointing
 * @returns {string}
 */
export function pointingTitle(pointing) {
  return (
    `pointing game: the map's strongest pixel lies on the object or within ${pointing.tolerance} px of it; ` +
    `energy: the share of the map's positive evidence on the object (${percent(pointing.share)} if spread evenly)`
  );
}

/**
 * The heading of the sanity strip: what is checked and how far it is.
 * @param {SanityStrip} strip
 * @returns {string}
 */
export function sanityHeading(strip) {
  const progress = strip.status === "computing" && strip.total > 0 ? ` · ${strip.done} of ${strip.total} layers` : "";
  const title = strip.title ? ` · ${strip.title}` : "";
  return `sanity check${title}: the map as the model's layers are randomised, from the output down${progress}`;
}

// Under the sanity strip's heading: what the numbers under its maps are.
export const SANITY_LEGEND =
  "under each map: the last layer randomised, and the map's similarity to the original (1: unchanged, 0: unrelated)";

/**
 * The number under one map of the sanity strip: its Spearman similarity to the original map (of |values|).
 * @param {number} similarity
 * @returns {string}
 */
export function similarityText(similarity) {
  return Number.isFinite(similarity) ? similarity.toFixed(2) : "–";
}

// ---------------------------------------------------------------------------------------------------------------
// What a channel looks for (LayerWidget): pure functions
// ---------------------------------------------------------------------------------------------------------------

/**
 * A channel's feature visualisation and dataset examples: `_featurevis_wire()` in src/livexai/widgets/layer.py.
 * @typedef {object} FeatureVisView
 * @property {string} status "computing", "partial", "done" or "error"
 * @property {string} note
 * @property {string} layer
 * @property {number} channel
 * @property {string} optimisation "robust" or "naive"
 * @property {number} step
 * @property {number} steps
 * @property {WireArray | null} image (h, w, 3) uint8, the optimised image so far
 * @property {number | null} activation
 * @property {number | null} random_activation
 * @property {WireArray | null} top (k, h, w, 3) uint8, the images that excite the channel most
 * @property {number[]} top_values
 * @property {number[]} top_indices
 */

/**
 * The section's heading: which channel, which recipe, how far the optimisation is.
 * @param {FeatureVisView} fv
 * @returns {string}
 */
export function featurevisHeading(fv) {
  const progress = fv.status === "done" ? `${fv.steps} steps` : `step ${fv.step}/${fv.steps}`;
  return `what channel ${fv.channel} of ${fv.layer} looks for · ${fv.optimisation} optimisation · ${progress}`;
}

/**
 * The optimised image's caption: its activation against a random image's (how much the optimisation gained).
 * @param {FeatureVisView} fv
 * @returns {string}
 */
export function featurevisCaption(fv) {
  if (fv.activation === null) return fv.status === "error" ? "" : "optimising…";
  const random = fv.random_activation === null ? "" : ` (random image ${formatValue(fv.random_activation)})`;
  return `activation ${formatValue(fv.activation)}${random}`;
}

// ---------------------------------------------------------------------------------------------------------------
// Text (TextWidget): pure functions
// ---------------------------------------------------------------------------------------------------------------

/**
 * A sentence as drawn: `_text_wire()` in src/livexai/widgets/text.py (`TextWire`).
 * @typedef {object} TextView
 * @property {string[]} tokens
 * @property {WireArray} content (T,) uint8: 1 on text, 0 on padding
 * @property {WireArray | null} rationale (T,) uint8: the tokens that really decide the label, when known
 * @property {WireArray | null} values (T,) float32, once computed
 * @property {boolean} signed
 * @property {string} method
 * @property {string} title
 * @property {string} status "computing", "partial" or "done"
 * @property {string} note
 * @property {boolean} editable
 * @property {string} sentence
 */

const TOKEN_FOR = Object.freeze([214, 39, 40]); // a token that pushes toward the class: red
const TOKEN_AGAINST = Object.freeze([31, 119, 180]); // one that pushes against it: blue
const TOKEN_ATTENTION = Object.freeze([230, 120, 0]); // attention (never negative): orange
const TOKEN_MAX_ALPHA = 0.8; // the strongest token's background opacity
const TOKEN_LIGHT_TEXT = 0.45; // from this opacity on, a token's text is white (dark text on a strong colour is hard to read)

/**
 * How strongly to colour a token: its background and whether its text should be light.
 * @param {number} value the token's value
 * @param {number} end the largest |value| among the sentence's tokens (the full colour)
 * @param {boolean} signed red for positive and blue for negative values; else one colour
 * @returns {{ background: string, light: boolean, strength: number }}
 */
export function tokenShade(value, end, signed) {
  const magnitude = signed ? Math.abs(value) : Math.max(0, value);
  const strength = end > 0 && Number.isFinite(value) ? Math.min(1, magnitude / end) : 0;
  const rgb = !signed ? TOKEN_ATTENTION : value >= 0 ? TOKEN_FOR : TOKEN_AGAINST;
  const alpha = Math.round(strength * TOKEN_MAX_ALPHA * 1000) / 1000;
  return { background: `rgba(${rgb.join(", ")}, ${alpha})`, light: alpha >= TOKEN_LIGHT_TEXT, strength };
}

/**
 * The largest |value| (signed) or value (non-negative) among the text tokens: what gets the full colour.
 * @param {ArrayLike<number>} values
 * @param {ArrayLike<number>} content 1 on text, 0 on padding
 * @param {boolean} signed
 * @returns {number}
 */
export function tokenScale(values, content, signed) {
  let end = 0;
  for (let i = 0; i < values.length; i++) {
    if (!content[i] || !Number.isFinite(values[i])) continue;
    end = Math.max(end, signed ? Math.abs(values[i]) : values[i]);
  }
  return end;
}

/**
 * The line that says how to read the colours.
 * @param {boolean} signed
 * @param {string} className the class explained
 * @returns {string}
 */
export function textLegend(signed, className) {
  return signed ? `red: pushes toward "${className}" · blue: pushes against it` : "darker: more attention";
}

// ---------------------------------------------------------------------------------------------------------------
// Tables (TabularExplorer): pure functions
// ---------------------------------------------------------------------------------------------------------------

/**
 * The rows of a table: `_table_wire()` in src/livexai/widgets/tabular.py (`TableWire`).
 * @typedef {object} Table
 * @property {string[]} columns
 * @property {string[]} classes
 * @property {WireArray} values (N, F)
 * @property {WireArray} predicted (N,) int32
 * @property {WireArray} confidence (N,) float32
 * @property {WireArray | null} labels (N,) int32, when given
 */
/**
 * One row's explanation: `_local_wire()` in src/livexai/widgets/tabular.py.
 * @typedef {object} Local
 * @property {string} title
 * @property {string[]} names
 * @property {WireArray} values (F,) attributions
 * @property {WireArray} features (F,) the row's values
 * @property {number} base
 * @property {number} prediction
 * @property {string} target
 * @property {string} output
 */
/**
 * One bar of a waterfall: the output moves from `start` to `end` by `value`.
 * @typedef {{ label: string, value: number, start: number, end: number }} Step
 */

const WATERFALL_BARS = 10; // features drawn one by one; the rest are summed into one bar
const TABLE_SORTS = Object.freeze(["row", "prediction", "confidence", "label"]);

/**
 * The waterfall of one explanation: from the base value, the `maxBars` largest contributions one by one (largest
 * first), then the rest summed, ending at base + sum of all values (the model's output when the method is exact).
 * @param {ArrayLike<number>} values
 * @param {string[]} labels one per value (e.g. "worst radius = 16.2")
 * @param {number} base
 * @param {number} [maxBars]
 * @returns {Step[]}
 */
export function waterfallSteps(values, labels, base, maxBars = WATERFALL_BARS) {
  const order = Array.from(values, (_, i) => i).sort((a, b) => Math.abs(values[b]) - Math.abs(values[a]));
  const shown = order.slice(0, maxBars);
  const rest = order.slice(maxBars);
  /** @type {Step[]} */
  const steps = [];
  let at = base;
  for (const i of shown) {
    steps.push({ label: labels[i], value: values[i], start: at, end: at + values[i] });
    at += values[i];
  }
  if (rest.length) {
    const sum = rest.reduce((total, i) => total + values[i], 0);
    steps.push({ label: `${rest.length} other features`, value: sum, start: at, end: at + sum });
  }
  return steps;
}

/**
 * Row indices in the order a table header asks for: by row number, predicted class, confidence or true label
 * (ties keep row order), ascending or descending.
 * @param {{ predicted: ArrayLike<number>, confidence: ArrayLike<number>, labels: ArrayLike<number> | null }} rows
 * @param {string} key one of TABLE_SORTS
 * @param {boolean} descending
 * @returns {number[]}
 */
export function sortRows(rows, key, descending) {
  const n = rows.predicted.length;
  /** @type {(i: number) => number} */
  const value =
    key === "prediction" ? (i) => rows.predicted[i]
    : key === "confidence" ? (i) => rows.confidence[i]
    : key === "label" && rows.labels ? (i) => /** @type {ArrayLike<number>} */ (rows.labels)[i]
    : (i) => i;
  const order = Array.from({ length: n }, (_, i) => i);
  order.sort((a, b) => value(a) - value(b) || a - b);
  return descending ? order.reverse() : order;
}

/**
 * A feature's values scaled to [0, 1] between their 5th and 95th percentiles (a beeswarm's colour: low to high),
 * so a few extreme rows do not wash out the rest.
 * @param {ArrayLike<number>} column
 * @returns {number[]}
 */
export function featureShades(column) {
  const sorted = Array.from(column).sort((a, b) => a - b);
  const at = (/** @type {number} */ q) => sorted[Math.min(sorted.length - 1, Math.floor(q * (sorted.length - 1)))];
  const low = at(0.05);
  const high = at(0.95);
  return Array.from(column, (v) => (high > low ? Math.min(1, Math.max(0, (v - low) / (high - low))) : 0.5));
}

/**
 * Feature indices by mean absolute value over the rows of an (n, F) matrix, largest first.
 * @param {Decoded} matrix
 * @returns {number[]}
 */
export function rankFeatures(matrix) {
  const [n, f] = matrix.shape;
  const mean = new Array(f).fill(0);
  for (let r = 0; r < n; r++) for (let j = 0; j < f; j++) mean[j] += Math.abs(matrix.values[r * f + j]) / n;
  return mean.map((_, j) => j).sort((a, b) => mean[b] - mean[a] || a - b);
}

const LOW_COLOUR = hexToRgb("#2a71b2"); // a beeswarm's low feature values (the red-blue map's blue)
const HIGH_COLOUR = hexToRgb("#ba2832"); // and its high ones (its red); mid values are a purple that shows on any theme

/**
 * The colour of a beeswarm dot: blue for a low feature value, red for a high one, through purple.
 * @param {number} shade in [0, 1]
 * @returns {string} a CSS rgb() colour
 */
export function shadeColour(shade) {
  const mix = LOW_COLOUR.map((low, c) => Math.round(low + (HIGH_COLOUR[c] - low) * shade));
  return `rgb(${mix[0]},${mix[1]},${mix[2]})`;
}

// ---------------------------------------------------------------------------------------------------------------
// DOM helpers (used only inside render)
// ---------------------------------------------------------------------------------------------------------------

/**
 * A new element with a class and text (always text, never HTML).
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {string | null} [className]
 * @param {unknown} [text]
 * @returns {HTMLElementTagNameMap[K]}
 */
function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

/**
 * Mark an input as ours: JupyterLab's command-mode shortcuts would otherwise swallow arrow keys and letters typed here.
 * @template {HTMLElement} T
 * @param {T} node
 * @returns {T}
 */
function interactive(node) {
  node.setAttribute("data-lm-suppress-shortcuts", "true");
  return node;
}

/**
 * A select of `[value, text]` options.
 * @param {string} className
 * @param {Array<[string, string]>} options
 * @returns {HTMLSelectElement}
 */
function selectInput(className, options) {
  const select = interactive(element("select", className));
  for (const [value, text] of options) {
    const option = element("option", null, text);
    option.value = value;
    select.append(option);
  }
  return select;
}

/**
 * An `<input>` of `type`, with its other properties (min, max, step, value) set as strings, in the given order.
 * @param {string} className
 * @param {string} type
 * @param {Record<string, unknown>} [properties]
 * @returns {HTMLInputElement}
 */
function input(className, type, properties = {}) {
  const node = interactive(element("input", className));
  node.type = type;
  for (const [name, value] of Object.entries(properties)) Object.assign(node, { [name]: String(value) });
  return node;
}

/**
 * A `<button type="button">` with `data-<name>` attributes and a pressed state, calling `onClick`.
 * @param {Context} ctx
 * @param {string} className
 * @param {Record<string, string>} data
 * @param {boolean} pressed
 * @param {() => void} onClick
 * @returns {HTMLButtonElement}
 */
function toggleButton(ctx, className, data, pressed, onClick) {
  const button = interactive(element("button", className));
  button.type = "button";
  Object.assign(button.dataset, data);
  button.setAttribute("aria-pressed", String(pressed));
  ctx.listen(button, "click", onClick);
  return button;
}

/**
 * Size `canvas` to `width` x `height` and draw RGBA pixels on it.
 * @param {HTMLCanvasElement} canvas
 * @param {Uint8ClampedArray} rgba
 * @param {number} width
 * @param {number} height
 */
function putPixels(canvas, rgba, width, height) {
  canvas.width = width;
  canvas.height = height;
  canvas.getContext("2d")?.putImageData(new ImageData(rgba, width, height), 0, 0);
}

// ---------------------------------------------------------------------------------------------------------------
// Sections of the view: each fills its part of the layout and returns its `update`
// ---------------------------------------------------------------------------------------------------------------

/**
 * What every section needs: the model, DOM listeners that go when the view does, and writing a trait to the kernel.
 * @typedef {object} Context
 * @property {Model} model
 * @property {(node: EventTarget, event: string, handler: (event: any) => void) => void} listen
 * @property {(name: string, value: unknown) => void} send
 * @property {(content: object) => void} message send a custom message (one of MESSAGES) to the kernel
 */

/** @typedef {ReturnType<typeof buildLayout>} Layout */

/**
 * The view's skeleton: header (title, status, progress), error, Explorer strip, side column (controls, view
 * controls, predictions), main column (the tables' tabs, rows, waterfall and global view; panels, channels, sanity
 * strip, correlation) and the timing line.
 * @param {string} kind the widget's `kind`, for `data-kind` (what tests and styles select on)
 */
function buildLayout(kind) {
  const root = element("div", "livexai-root");
  root.dataset.kind = kind;
  const header = element("div", "livexai-header");
  const title = element("div", "livexai-title");
  const status = element("span", "livexai-status");
  status.setAttribute("role", "status");
  const progress = element("div", "livexai-progress");
  const progressBar = element("div", "livexai-progress-bar");
  progress.append(progressBar);
  header.append(title, status, progress);
  const error = element("div", "livexai-error");
  error.setAttribute("role", "alert");
  const strip = element("div", "livexai-strip");
  const body = element("div", "livexai-body");
  const side = element("div", "livexai-side");
  const controls = element("div", "livexai-controls");
  const viewControls = element("div", "livexai-view-controls");
  const predictions = element("div", "livexai-predictions");
  side.append(controls, viewControls, predictions);
  const main = element("div", "livexai-main");
  const panels = element("div", "livexai-panels");
  const channels = element("div", "livexai-channels");
  const featurevis = element("div", "livexai-featurevis");
  const correlation = element("div", "livexai-correlation");
  const sanity = element("div", "livexai-sanity");
  const tabs = element("div", "livexai-tabs");
  const rows = element("div", "livexai-table");
  const waterfall = element("div", "livexai-waterfall");
  const global = element("div", "livexai-global");
  const text = element("div", "livexai-text");
  main.append(tabs, rows, waterfall, global, text, panels, channels, featurevis, sanity, correlation);
  body.append(side, main);
  const info = element("div", "livexai-info");
  root.append(header, error, strip, body, info);
  return {
    root, title, status, progress, progressBar, error, strip, controls, viewControls, predictions, panels, channels,
    sanity, correlation, info, tabs, rows, waterfall, global, text, featurevis,
  };
}

/**
 * Title, status line, progress bar, error message and the timing line.
 * @param {Context} ctx
 * @param {Layout} layout
 */
function statusSection(ctx, layout) {
  const { model } = ctx;
  return function update() {
    layout.title.textContent = model.get(TRAITS.title) || "";
    const status = model.get(TRAITS.status);
    const progress = model.get(TRAITS.progress);
    layout.status.textContent = statusText(status, progress);
    layout.root.dataset.status = status;
    layout.progressBar.style.width = `${Math.round((Number(progress) || 0) * 100)}%`;
    layout.progress.dataset.active = String(status === "computing");
    const message = model.get(TRAITS.error) || "";
    layout.error.textContent = message;
    layout.error.hidden = message === "";
    const nEvals = model.get(TRAITS.nEvals);
    layout.info.textContent = status === "idle" || nEvals > 0 ? timingText(model.get(TRAITS.elapsedMs), nEvals) : "";
  };
}

/**
 * The parameters' controls (`controls` trait; each change goes to the kernel, which may refuse it).
 * `update()` rebuilds them; `update(name)` shows the kernel's value of one parameter.
 * @param {Context} ctx
 * @param {HTMLElement} node
 * @returns {(name?: string) => void}
 */
function controlsSection(ctx, node) {
  /** @type {Map<string, (value: unknown) => void>} parameter -> show its value */
  const inputs = new Map();
  return function update(name) {
    if (name !== undefined) {
      inputs.get(name)?.(ctx.model.get(name));
      return;
    }
    node.replaceChildren();
    inputs.clear();
    for (const spec of /** @type {Control[]} */ (ctx.model.get(TRAITS.controls) || [])) {
      const row = element("label", `livexai-control livexai-control-${spec.name}`);
      row.append(element("span", "livexai-control-label", spec.label || spec.name));
      const show = spec.kind === "choice" ? choiceControl(ctx, spec, row) : numberControl(ctx, spec, row);
      inputs.set(spec.name, show);
      node.append(row);
      show(ctx.model.get(spec.name));
    }
  };
}

/**
 * A select for a "choice" parameter, appended to `row`; returns what shows a value.
 * @param {Context} ctx
 * @param {Control} spec
 * @param {HTMLElement} row
 * @returns {(value: unknown) => void}
 */
function choiceControl(ctx, spec, row) {
  const select = selectInput(`livexai-select livexai-select-${spec.name}`, (spec.choices || []).map((c) => [c, c]));
  ctx.listen(select, "change", () => ctx.send(spec.name, select.value));
  row.append(select);
  return (value) => (select.value = String(value));
}

/**
 * A slider and a number box for an "int" or "float" parameter, appended to `row`; returns what shows a value.
 * @param {Context} ctx
 * @param {Control} spec
 * @param {HTMLElement} row
 * @returns {(value: unknown) => void}
 */
function numberControl(ctx, spec, row) {
  const range = { min: spec.min, max: spec.max, step: spec.step };
  const slider = input(`livexai-slider livexai-slider-${spec.name}`, "range", range);
  const number = input(`livexai-number livexai-number-${spec.name}`, "number", range);
  ctx.listen(slider, "input", () => {
    number.value = slider.value;
    ctx.send(spec.name, controlValue(spec.kind, slider.value));
  });
  // The number box sends whatever is typed, even out of the slider's range: the kernel checks it and
  // refuses what is invalid with a message, which is the behaviour users should see.
  // Enter commits too (Chromium fires "change" for a number box only when it loses focus).
  ctx.listen(number, "keydown", (event) => {
    if (event.key === "Enter") number.blur();
  });
  ctx.listen(number, "change", () => {
    if (number.value.trim() === "" || !Number.isFinite(Number(number.value))) {
      number.value = String(ctx.model.get(spec.name));
      return;
    }
    ctx.send(spec.name, controlValue(spec.kind, number.value));
  });
  row.append(slider, number);
  return (value) => {
    slider.value = String(value);
    number.value = String(value);
  };
}

/**
 * Browser-only controls of how maps are drawn (they change `view` and call `redraw`, no kernel round trip).
 * `update()` fits the top-superpixels slider to the panels shown.
 * @param {Context} ctx
 * @param {HTMLElement} node
 * @param {View} view
 * @param {() => void} redraw
 * @returns {() => void}
 */
function viewControlsSection(ctx, node, view, redraw) {
  /** @type {(label: string, className: string, control: HTMLElement) => HTMLElement} */
  const row = (label, className, control) => {
    const line = element("label", `livexai-control ${className}-row`);
    line.append(element("span", "livexai-control-label", label), control);
    node.append(line);
    return line;
  };
  /** @type {(control: HTMLElement, event: string, apply: () => void) => void} */
  const onEdit = (control, event, apply) => ctx.listen(control, event, () => {
    apply();
    redraw();
  });
  const opacity = input("livexai-opacity", "range", { min: 0, max: 1, step: OPACITY_STEP, value: view.opacity });
  onEdit(opacity, "input", () => (view.opacity = Number(opacity.value)));
  row("opacity", "livexai-opacity", opacity);
  const colormap = selectInput("livexai-colormap", COLORMAPS.map((name) => [name, name]));
  onEdit(colormap, "change", () => (view.colormap = colormap.value));
  row("colour map", "livexai-colormap", colormap);
  /** @type {Array<[string, string]>} */
  const underlays = UNDERLAYS.map((name) => [name, name === "grey" ? "faded grey image" : "colour image"]);
  const underlay = selectInput("livexai-underlay", underlays);
  underlay.value = view.underlay || "grey";
  onEdit(underlay, "change", () => (view.underlay = underlay.value));
  row("underlay", "livexai-underlay", underlay);
  /** @type {Array<[string, string]>} */
  const signs = SIGNS.map((name) => [name, name === "all" ? "positive and negative" : `${name} only`]);
  const sign = selectInput("livexai-sign", signs);
  onEdit(sign, "change", () => (view.sign = sign.value));
  row("show", "livexai-sign", sign);
  const topK = input("livexai-topk", "range", { min: 0, max: TOPK_SLIDER_MAX, step: 1, value: view.topK });
  const topKValue = element("span", "livexai-topk-value", "all");
  onEdit(topK, "input", () => (view.topK = Number(topK.value)));
  row("top superpixels", "livexai-topk", topK).append(topKValue);
  const hideRest = input("livexai-hide-rest", "checkbox");
  onEdit(hideRest, "change", () => (view.hideRest = hideRest.checked));
  row("hide the rest", "livexai-hide-rest", hideRest);
  const boundaries = input("livexai-boundaries", "checkbox");
  onEdit(boundaries, "change", () => (view.boundaries = boundaries.checked));
  row("superpixel borders", "livexai-boundaries", boundaries);
  return function update() {
    const count = segmentCount(ctx.model.get(TRAITS.panels) || []);
    topK.disabled = count === 0;
    if (count > 0) topK.max = String(count);
    topKValue.textContent = view.topK > 0 ? String(view.topK) : "all";
  };
}

/**
 * The top predictions as bars; clicking one explains that class (sets `target`).
 * @param {Context} ctx
 * @param {HTMLElement} node
 * @returns {() => void}
 */
function predictionsSection(ctx, node) {
  return function update() {
    node.replaceChildren();
    /** @type {Prediction[]} */
    const predictions = ctx.model.get(TRAITS.predictions) || [];
    if (predictions.length === 0) return;
    node.append(element("div", "livexai-section-title", "top predictions (click to explain)"));
    const pressed = shownTarget(ctx.model.get(TRAITS.target), ctx.model.get(TRAITS.panels) || [], predictions);
    for (const p of predictions) {
      const send = () => ctx.send(TRAITS.target, p.index);
      const button = toggleButton(ctx, "livexai-pred", { index: String(p.index) }, p.index === pressed, send);
      const bar = element("span", "livexai-pred-bar");
      bar.style.width = `${Math.max(0, Math.min(1, p.probability)) * 100}%`;
      const value = `${(p.probability * 100).toFixed(1)}%`;
      button.append(bar, element("span", "livexai-pred-label", p.label), element("span", "livexai-pred-value", value));
      node.append(button);
    }
  };
}

/**
 * The Explorer's strip of thumbnails; clicking one explains that image (sets `selected`).
 * @param {Context} ctx
 * @param {HTMLElement} node
 * @returns {() => void}
 */
function stripSection(ctx, node) {
  return function update() {
    node.replaceChildren();
    /** @type {Thumbnail[] | undefined} */
    const thumbnails = ctx.model.get(TRAITS.thumbnails);
    if (!thumbnails || thumbnails.length === 0) return;
    const selected = ctx.model.get(TRAITS.selected);
    thumbnails.forEach((wire, index) => {
      const decoded = /** @type {Decoded} */ (decodeArray(wire));
      const send = () => ctx.send(TRAITS.selected, index);
      const button = toggleButton(ctx, "livexai-thumb", { index: String(index) }, index === selected, send);
      const canvas = element("canvas");
      putPixels(canvas, imagePixels(decoded), decoded.shape[1], decoded.shape[0]);
      button.append(canvas);
      node.append(button);
    });
  };
}

/** @typedef {ReturnType<typeof panelFigure>} PanelNodes */

/**
 * A panel's figure: caption, canvas, colour bar and info line.
 * @param {string} key the panel's key (`data-key`)
 */
function panelFigure(key) {
  const figure = element("figure", "livexai-panel");
  figure.dataset.key = key;
  const caption = element("figcaption", "livexai-panel-title");
  const canvas = element("canvas", "livexai-canvas");
  const bar = element("div", "livexai-colorbar");
  const barGradient = element("div", "livexai-colorbar-gradient");
  const barLabels = element("div", "livexai-colorbar-labels");
  const barNote = element("div", "livexai-colorbar-note");
  bar.append(barGradient, barLabels, barNote);
  const info = element("div", "livexai-panel-info");
  const pointing = element("div", "livexai-pointing");
  const curves = element("div", "livexai-curves");
  const sanity = interactive(element("button", "livexai-sanity-button", "sanity check"));
  sanity.type = "button";
  sanity.title = "randomise the model's layers from the output down and watch whether the map changes";
  figure.append(caption, canvas, bar, info, pointing, curves, sanity);
  return { figure, caption, canvas, barGradient, barLabels, barNote, info, pointing, curves, sanity };
}

/**
 * Fill a panel's faithfulness node: a small SVG chart of the deletion and insertion curves with a legend, or a
 * line saying they are being computed or why they failed (nothing without curves).
 * @param {HTMLElement} node
 * @param {Curves | undefined} curves
 */
function drawCurves(node, curves) {
  node.dataset.status = curves ? curves.status : "none";
  if (!curves) {
    node.replaceChildren();
    return;
  }
  if (curves.status !== "done") {
    const text = curves.status === "error" ? `faithfulness curves failed: ${curves.note}` : "faithfulness curves…";
    node.replaceChildren(element("div", "livexai-curves-note", text));
    return;
  }
  const fractions = decodeArray(curves.fractions);
  const deletion = decodeArray(curves.deletion);
  const insertion = decodeArray(curves.insertion);
  if (!fractions || !deletion || !insertion) return;
  const top = chartTop([deletion.values, insertion.values]);
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("class", "livexai-curves-chart");
  svg.setAttribute("viewBox", `0 0 ${CHART.width} ${CHART.height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  const legend = curveLegend(curves);
  svg.setAttribute("aria-label", `${legend.deletion}; ${legend.insertion}`);
  const frame = document.createElementNS(SVG_NS, "rect");
  frame.setAttribute("class", "livexai-curves-frame");
  Object.entries({ x: 0.5, y: 0.5, width: CHART.width - 1, height: CHART.height - 1 }).forEach(([k, v]) => frame.setAttribute(k, String(v)));
  svg.append(frame);
  for (const [kind, scores] of /** @type {Array<[string, Decoded]>} */ ([["deletion", deletion], ["insertion", insertion]])) {
    const line = document.createElementNS(SVG_NS, "polyline");
    line.setAttribute("class", `livexai-curve livexai-curve-${kind}`);
    line.setAttribute("points", curvePoints(fractions.values, scores.values, { top }));
    line.setAttribute("vector-effect", "non-scaling-stroke");
    svg.append(line);
  }
  const caption = element("div", "livexai-curves-caption", CURVES_CAPTION);
  const rows = ["deletion", "insertion"].map((kind) => {
    const row = element("div", `livexai-curves-legend livexai-curves-legend-${kind}`);
    row.append(element("span", "livexai-swatch"), element("span", null, legend[/** @type {"deletion" | "insertion"} */ (kind)]));
    return row;
  });
  node.replaceChildren(caption, svg, ...rows);
}

/**
 * Draw one panel: its map over the image with the view's settings, or the bare image while there is no map yet; the
 * "points at the object" line and the sanity button where the panel has them (its curves: `drawCurves`).
 * @param {PanelNodes} nodes
 * @param {Panel} p
 * @param {Decoded | null} image
 * @param {View} view
 */
function drawPanel(nodes, p, image, view) {
  nodes.caption.textContent = panelCaption(p);
  nodes.figure.dataset.status = p.status || "done";
  nodes.info.textContent = panelInfoText(p);
  nodes.pointing.textContent = p.pointing ? pointingText(p.pointing) : "";
  nodes.pointing.title = p.pointing ? pointingTitle(p.pointing) : "";
  nodes.pointing.dataset.hit = p.pointing ? String(p.pointing.hit) : "";
  nodes.sanity.hidden = !p.sanity || !p.map;
  const map = decodeArray(p.map);
  nodes.canvas.classList.toggle("livexai-empty", !map);
  if (!map) {
    if (image) putPixels(nodes.canvas, imagePixels(image), image.shape[1], image.shape[0]);
    nodes.barLabels.replaceChildren();
    nodes.barNote.textContent = "";
    return;
  }
  const data = { segments: decodeArray(p.segments), weights: decodeArray(p.weights), image, signed: p.signed };
  const drawn = mapPixels(map, data, view);
  putPixels(nodes.canvas, drawn.rgba, drawn.width, drawn.height);
  nodes.barGradient.style.background = `linear-gradient(to right, ${colormapCss(drawn.colormap).join(", ")})`;
  const { labels, note } = colorbarText(drawn.range, p.signed);
  nodes.barLabels.replaceChildren(...labels.map((text) => element("span", null, text)));
  nodes.barNote.textContent = note;
}

/**
 * The panels (one figure per panel key, kept across updates) and the activation channel grid.
 * @param {Context} ctx
 * @param {Layout} layout
 * @param {View} view
 * @returns {() => void}
 */
function panelsSection(ctx, layout, view) {
  /** @type {Map<string, PanelNodes>} */
  const figures = new Map();
  return function update() {
    const image = decodeArray(ctx.model.get(TRAITS.image));
    /** @type {Panel[]} */
    const panels = ctx.model.get(TRAITS.panels) || [];
    /** @type {Record<string, Curves>} */
    const curves = ctx.model.get(TRAITS.curves) || {};
    const seen = new Set();
    for (const p of panels) {
      if (!p.map && p.channels) continue; // the channel grid's panel: drawn below
      let nodes = figures.get(p.key);
      if (!nodes) {
        const created = (nodes = panelFigure(p.key));
        figures.set(p.key, created);
        ctx.listen(created.sanity, "click", () => ctx.message({ kind: MESSAGES.sanityCheck, key: created.figure.dataset.key }));
      }
      seen.add(p.key);
      if (nodes.figure.parentNode !== layout.panels) layout.panels.append(nodes.figure);
      drawPanel(nodes, p, image, view);
      drawCurves(nodes.curves, p.status === "done" ? curves[p.key] : undefined);
    }
    for (const [key, nodes] of figures) {
      if (!seen.has(key)) {
        nodes.figure.remove();
        figures.delete(key);
      }
    }
    const channelPanel = panels.find((p) => p.channels);
    layout.channels.replaceChildren(...(channelPanel ? channelGrid(ctx, channelPanel) : []));
  };
}

/**
 * The LayerWidget's channels: the chosen one (`channel`; -1: the first, strongest) enlarged above a grid of all;
 * clicking one chooses it. Returns the nodes to show (none without channel data).
 * @param {Context} ctx
 * @param {Panel} p the panel with `channels` and `channel_ids`
 * @returns {HTMLElement[]}
 */
function channelGrid(ctx, p) {
  const channels = decodeArray(p.channels);
  const ids = decodeArray(p.channel_ids);
  if (!channels || !ids) return [];
  const [count, h, w] = channels.shape;
  const chosen = ctx.model.get(TRAITS.channel);
  const large = element("canvas", "livexai-channel-large");
  const largeTitle = element("div", "livexai-section-title");
  const grid = element("div", "livexai-channel-grid");
  for (let c = 0; c < count; c++) {
    const id = ids.values[c];
    const pixels = channelPixels(channels.values.subarray(c * h * w, (c + 1) * h * w));
    const send = () => ctx.send(TRAITS.channel, id);
    const button = toggleButton(ctx, "livexai-channel", { channel: String(id) }, id === chosen, send);
    button.title = `channel ${id}`;
    const canvas = element("canvas");
    putPixels(canvas, pixels, w, h);
    button.append(canvas);
    grid.append(button);
    if (id === chosen || (chosen < 0 && c === 0)) {
      putPixels(large, pixels, w, h);
      largeTitle.textContent = `channel ${id} (click a channel below to enlarge it)`;
    }
  }
  return [largeTitle, large, grid];
}

/**
 * What the chosen channel looks for (LayerWidget, activations): the image optimised to excite it, streaming in
 * as it improves, beside the given images that excite it most with their activations.
 * @param {Context} ctx
 * @param {HTMLElement} node
 * @returns {() => void}
 */
function featurevisSection(ctx, node) {
  return function update() {
    /** @type {FeatureVisView | null} */
    const fv = ctx.model.get(TRAITS.featurevis);
    node.replaceChildren();
    if (!fv) return;
    node.dataset.status = fv.status;
    const optimised = element("figure", "livexai-featurevis-image");
    const canvas = element("canvas");
    const image = decodeArray(fv.image);
    if (image) putPixels(canvas, imagePixels(image), image.shape[1], image.shape[0]);
    optimised.append(canvas, element("figcaption", null, featurevisCaption(fv)));
    const examples = element("div", "livexai-featurevis-examples");
    const top = decodeArray(fv.top);
    if (top) {
      const [count, h, w] = top.shape;
      examples.append(element("div", "livexai-section-title", "the given images that excite it most"));
      const grid = element("div", "livexai-featurevis-grid");
      for (let i = 0; i < count; i++) {
        const example = element("figure", "livexai-featurevis-example");
        const thumb = element("canvas");
        putPixels(thumb, imagePixels({ values: top.values.subarray(i * h * w * 3, (i + 1) * h * w * 3), shape: [h, w, 3] }), w, h);
        example.title = `image ${fv.top_indices[i]}`;
        example.append(thumb, element("figcaption", null, formatValue(fv.top_values[i])));
        grid.append(example);
      }
      examples.append(grid);
    } else {
      examples.append(element("div", "livexai-featurevis-hint", "LayerWidget(..., images=...) also shows the images that excite the channel most"));
    }
    const row = element("div", "livexai-featurevis-row");
    row.append(optimised, examples);
    node.append(element("div", "livexai-section-title", featurevisHeading(fv)), row);
    if (fv.note) node.append(element("div", "livexai-featurevis-note", fv.note));
  };
}

/**
 * The sanity check's strip: the original map and the maps after each shown randomisation step, each with its
 * similarity to the original, and the report's one-line summary (nothing before a check is asked for).
 * @param {Context} ctx
 * @param {HTMLElement} node
 * @returns {() => void}
 */
function sanitySection(ctx, node) {
  return function update() {
    /** @type {SanityStrip | null} */
    const strip = ctx.model.get(TRAITS.sanity);
    if (!strip) {
      node.replaceChildren();
      return;
    }
    node.dataset.status = strip.status;
    node.dataset.passed = strip.passed === null ? "" : String(strip.passed);
    const heading = element("div", "livexai-section-title", sanityHeading(strip));
    const legend = element("div", "livexai-sanity-legend", SANITY_LEGEND);
    const maps = decodeArray(strip.maps);
    const similarity = decodeArray(strip.similarity);
    const image = decodeArray(strip.image);
    const row = element("div", "livexai-sanity-strip");
    if (maps && similarity) {
      const [count, h, w] = maps.shape;
      for (let i = 0; i < count; i++) {
        const map = { values: maps.values.subarray(i * h * w, (i + 1) * h * w), shape: [h, w] };
        const drawn = mapPixels(map, { segments: null, weights: null, image, signed: strip.signed }, DEFAULT_VIEW);
        const figure = element("figure", "livexai-sanity-step");
        const canvas = element("canvas");
        putPixels(canvas, drawn.rgba, drawn.width, drawn.height);
        const layer = strip.layers[i] || "";
        const label = element("figcaption", "livexai-sanity-layer", layer);
        label.title = layer;
        const score = element("div", "livexai-sanity-similarity", similarityText(similarity.values[i]));
        figure.append(canvas, label, score);
        row.append(figure);
      }
    }
    const summary = element("div", "livexai-sanity-summary", strip.summary || (strip.status === "computing" ? "randomising…" : ""));
    node.replaceChildren(heading, legend, row, summary);
  };
}

// The agreement table's caption when Python sends none (explorer.py's `correlation` carries its own).
const DEFAULT_CORRELATION_CAPTION = "rank correlation between maps (Spearman)";

/**
 * The Explorer's table of rank correlations between its methods' maps.
 * @param {Context} ctx
 * @param {HTMLElement} node
 * @returns {() => void}
 */
function correlationSection(ctx, node) {
  return function update() {
    /** @type {Correlation | null} */
    const wire = ctx.model.get(TRAITS.correlation);
    const matrix = wire ? decodeArray(wire) : null;
    const caption = (wire && wire.caption) || DEFAULT_CORRELATION_CAPTION;
    node.replaceChildren(...(wire && matrix ? [correlationTable(matrix, wire.names || [], caption)] : []));
  };
}

/**
 * A table of an (n, n) matrix with `names` along both sides; each cell's strength and sign are CSS hooks.
 * @param {Decoded} matrix
 * @param {string[]} names
 * @param {string} caption what the numbers compare (Python says: the maps averaged over the same superpixels)
 * @returns {HTMLTableElement}
 */
function correlationTable(matrix, names, caption) {
  const n = matrix.shape[0];
  const table = element("table", "livexai-correlation-table");
  table.append(element("caption", null, caption));
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
  return table;
}

// ---------------------------------------------------------------------------------------------------------------
// Tables (TabularExplorer): sections
// ---------------------------------------------------------------------------------------------------------------

const ROW_CHART = Object.freeze({ width: 560, bar: 18, label: 230, pad: 6 }); // waterfall and bar charts, in px
const SWARM = Object.freeze({ width: 560, row: 26, label: 150, features: 10 }); // the beeswarm
const VIEW_NAMES = Object.freeze({ row: "This row", global: "Whole model" });

/**
 * An SVG element with its attributes.
 * @param {string} tag
 * @param {Record<string, string | number>} [attributes]
 * @returns {SVGElement}
 */
function svgNode(tag, attributes = {}) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  return node;
}

/**
 * An SVG `<text>` set as text (never parsed).
 * @param {string} text
 * @param {Record<string, string | number>} attributes
 * @returns {SVGElement}
 */
function svgText(text, attributes) {
  const node = svgNode("text", attributes);
  node.textContent = text;
  return node;
}

/**
 * The two tabs: this row's explanation, or the whole model's picture (computed the first time it is opened).
 * @param {Context} ctx
 * @param {HTMLElement} node
 * @returns {() => void}
 */
function tabsSection(ctx, node) {
  return function update() {
    const current = ctx.model.get(TRAITS.view) || "row";
    node.replaceChildren(
      ...Object.entries(VIEW_NAMES).map(([name, text]) => {
        const tab = toggleButton(ctx, "livexai-tab", { view: name }, name === current, () => ctx.send(TRAITS.view, name));
        tab.textContent = text;
        return tab;
      }),
    );
  };
}

/**
 * The TextWidget's sentence: an editor (when the kernel can read typed text), the tokens coloured by their values
 * (drawn as text: a token is data, never HTML), the ground truth underlined, a legend and a note.
 * @param {Context} ctx
 * @param {HTMLElement} node
 * @returns {() => void}
 */
function textSection(ctx, node) {
  const editor = element("form", "livexai-text-editor");
  const input = interactive(element("input", "livexai-sentence"));
  input.type = "text";
  input.placeholder = "type a sentence and press Enter";
  input.setAttribute("aria-label", "sentence to explain");
  const submit = interactive(element("button", "livexai-sentence-submit", "explain"));
  submit.type = "submit";
  editor.append(input, submit);
  ctx.listen(editor, "submit", (event) => {
    event.preventDefault();
    ctx.send(TRAITS.sentence, input.value);
  });
  // Enter explains the sentence (JupyterLab would otherwise take the key before the form's implicit submit).
  ctx.listen(input, "keydown", (event) => {
    if (/** @type {KeyboardEvent} */ (event).key !== "Enter") return;
    event.preventDefault();
    event.stopPropagation();
    ctx.send(TRAITS.sentence, input.value);
  });
  const heading = element("div", "livexai-section-title");
  const tokens = element("div", "livexai-tokens");
  const legend = element("div", "livexai-text-legend");
  const note = element("div", "livexai-text-note");
  node.append(editor, heading, tokens, legend, note);
  /** @type {string | null} */
  let shownSentence = null;
  return function update() {
    /** @type {TextView | null} */
    const view = ctx.model.get(TRAITS.text);
    node.hidden = !view || !view.tokens;
    if (!view || !view.tokens) return;
    editor.hidden = !view.editable;
    if (view.sentence !== shownSentence && document.activeElement !== input) {
      input.value = view.sentence;
      shownSentence = view.sentence;
    }
    const content = decodeArray(view.content)?.values ?? [];
    const rationale = view.rationale ? decodeArray(view.rationale)?.values : null;
    const values = view.values ? decodeArray(view.values)?.values : null;
    const end = values ? tokenScale(values, content, view.signed) : 0;
    heading.textContent = view.values ? `${view.title}${view.status === "partial" ? " (refining…)" : ""}` : `${view.title}: computing…`;
    tokens.dataset.status = view.status;
    tokens.replaceChildren();
    view.tokens.forEach((token, i) => {
      if (!content[i]) return; // padding is not part of the text
      const span = element("span", "livexai-token", token);
      span.dataset.index = String(i);
      if (rationale && rationale[i]) span.classList.add("livexai-token-rationale");
      if (values) {
        const shade = tokenShade(values[i], end, view.signed);
        span.style.background = shade.background;
        span.classList.toggle("livexai-token-light", shade.light);
        span.dataset.value = String(values[i]);
        span.title = formatValue(values[i]);
      }
      tokens.append(span);
    });
    const predictions = /** @type {Prediction[]} */ (ctx.model.get(TRAITS.predictions) || []);
    const target = shownTarget(ctx.model.get(TRAITS.target), [], predictions);
    const className = predictions.find((p) => p.index === target)?.label ?? String(target);
    const truth = rationale ? " · underlined: the words that decide the label" : "";
    legend.textContent = values ? textLegend(view.signed, className) + truth : "";
    note.textContent = view.note;
  };
}

/**
 * The rows as a table (row, prediction, confidence, label); clicking a row explains it, clicking a header sorts.
 * @param {Context} ctx
 * @param {HTMLElement} node
 * @returns {() => void}
 */
function tableSection(ctx, node) {
  let sort = { key: "row", descending: false };
  return function update() {
    /** @type {Table | null} */
    const table = ctx.model.get(TRAITS.table);
    const predicted = table ? decodeArray(table.predicted) : null;
    const confidence = table ? decodeArray(table.confidence) : null;
    if (!table || !predicted || !confidence || ctx.model.get(TRAITS.view) === "global") {
      node.replaceChildren();
      return;
    }
    const labels = table.labels ? decodeArray(table.labels) : null;
    const rows = { predicted: predicted.values, confidence: confidence.values, labels: labels ? labels.values : null };
    const selected = ctx.model.get(TRAITS.selected);
    const grid = element("table", "livexai-rows");
    const head = element("tr");
    for (const key of TABLE_SORTS.filter((k) => k !== "label" || labels)) {
      const cell = element("th", null, key === sort.key ? `${key} ${sort.descending ? "▼" : "▲"}` : key);
      cell.dataset.sort = key;
      ctx.listen(cell, "click", () => {
        sort = { key, descending: key === sort.key ? !sort.descending : key === "confidence" };
        update();
      });
      head.append(cell);
    }
    grid.append(head);
    for (const i of sortRows(rows, sort.key, sort.descending)) {
      const row = element("tr");
      row.dataset.row = String(i);
      row.setAttribute("aria-selected", String(i === selected));
      const cells = [String(i), table.classes[rows.predicted[i]], `${(rows.confidence[i] * 100).toFixed(1)} %`];
      if (rows.labels) cells.push(table.classes[rows.labels[i]]);
      for (const text of cells) row.append(element("td", null, text));
      if (rows.labels && rows.labels[i] !== rows.predicted[i]) row.dataset.wrong = "true";
      ctx.listen(row, "click", () => ctx.send(TRAITS.selected, i));
      grid.append(row);
    }
    const scroller = element("div", "livexai-rows-scroller");
    scroller.append(grid);
    node.replaceChildren(element("div", "livexai-rows-caption", "rows: click one to explain it, a header to sort"), scroller);
  };
}

/**
 * This row's explanation as a waterfall (base value, each feature's push, the output) or as plain bars; the
 * choice is the browser's (`view.bars`), drawn from the same arrays.
 * @param {Context} ctx
 * @param {HTMLElement} node
 * @returns {() => void}
 */
function waterfallSection(ctx, node) {
  let bars = false;
  return function update() {
    /** @type {Local | null} */
    const local = ctx.model.get(TRAITS.local);
    const values = local ? decodeArray(local.values) : null;
    const features = local ? decodeArray(local.features) : null;
    if (!local || !values || !features || ctx.model.get(TRAITS.view) === "global") {
      node.replaceChildren();
      return;
    }
    const labels = local.names.map((name, i) => `${name} = ${formatValue(features.values[i])}`);
    const toggle = toggleButton(ctx, "livexai-chart-toggle", { bars: String(!bars) }, bars, () => {
      bars = !bars;
      update();
    });
    toggle.textContent = bars ? "show as waterfall" : "show as bars";
    const heading = element(
      "div",
      "livexai-waterfall-heading",
      `${local.title} of “${local.target}” (${local.output}): base ${formatValue(local.base)} → ${formatValue(local.prediction)}`,
    );
    const steps = waterfallSteps(values.values, labels, bars ? 0 : local.base);
    node.replaceChildren(heading, toggle, stepsChart(steps, bars ? 0 : local.base, bars));
  };
}

/**
 * Horizontal bars for `steps`: each from its start to its end (a waterfall) or from 0 (plain bars), red where the
 * feature pushes the output up, blue where it pushes it down, with the value written beside each bar. `spread`
 * (one per step) draws a ± line around each bar's end; a waterfall ends with a mark at the output it reaches.
 * @param {Step[]} steps
 * @param {number} base
 * @param {boolean} fromZero
 * @param {number[]} [spread]
 * @returns {SVGElement}
 */
function stepsChart(steps, base, fromZero, spread) {
  const { width, bar, label, pad } = ROW_CHART;
  const total = steps.length ? steps[steps.length - 1].end : base;
  const rowsDrawn = steps.length + (fromZero ? 0 : 1);
  const height = rowsDrawn * (bar + 4) + 2 * pad;
  const ends = steps.flatMap((s, i) => {
    const [a, b] = fromZero ? [0, s.value] : [s.start, s.end];
    const e = spread ? spread[i] : 0;
    return [a, b - e, b + e];
  });
  const low = Math.min(fromZero ? 0 : base, ...ends);
  const high = Math.max(fromZero ? 0 : base, ...ends);
  const span = high - low || 1;
  const x = (/** @type {number} */ v) => label + ((v - low) / span) * (width - label - 60);
  const svg = svgNode("svg", { class: "livexai-steps", viewBox: `0 0 ${width} ${height}`, width, height, role: "img" });
  svg.setAttribute("aria-label", steps.map((s) => `${s.label}: ${formatValue(s.value)}`).join("; "));
  const zero = x(fromZero ? 0 : base);
  svg.append(svgNode("line", { class: "livexai-steps-axis", x1: zero, x2: zero, y1: pad, y2: height - pad }));
  steps.forEach((step, row) => {
    const y = pad + row * (bar + 4);
    const [a, b] = fromZero ? [0, step.value] : [step.start, step.end];
    const sign = step.value >= 0 ? "positive" : "negative";
    const e = spread ? spread[row] : 0;
    svg.append(
      svgText(step.label, { class: "livexai-steps-label", x: label - 6, y: y + bar * 0.7, "text-anchor": "end" }),
      svgNode("rect", { class: `livexai-step livexai-step-${sign}`, x: Math.min(x(a), x(b)), y, width: Math.max(1, Math.abs(x(b) - x(a))), height: bar }),
      svgText(`${step.value >= 0 ? "+" : ""}${formatValue(step.value)}`, { class: "livexai-steps-value", x: Math.max(x(a), x(b), x(b + e)) + 4, y: y + bar * 0.7 }),
    );
    if (e) svg.append(svgNode("line", { class: "livexai-error-bar", x1: x(b - e), x2: x(b + e), y1: y + bar / 2, y2: y + bar / 2 }));
  });
  if (!fromZero) {
    const y = pad + steps.length * (bar + 4);
    svg.append(
      svgText(`output = ${formatValue(total)}`, { class: "livexai-steps-label livexai-steps-total", x: label - 6, y: y + bar * 0.7, "text-anchor": "end" }),
      svgNode("line", { class: "livexai-steps-output", x1: x(total), x2: x(total), y1: y, y2: y + bar }),
    );
  }
  return svg;
}

/**
 * The global tab: permutation importance (mean ± spread), the beeswarm of SHAP values as rows finish, and the
 * distilled tree's rules with its fidelity; each part says "computing…" until its job is done.
 * @param {Context} ctx
 * @param {HTMLElement} node
 * @returns {() => void}
 */
function globalSection(ctx, node) {
  return function update() {
    if (ctx.model.get(TRAITS.view) !== "global") {
      node.replaceChildren();
      return;
    }
    /** @type {Table | null} */
    const table = ctx.model.get(TRAITS.table);
    const parts = ctx.model.get(TRAITS.globalView) || {};
    const columns = table ? table.columns : [];
    node.replaceChildren(
      globalPart("Permutation importance", parts.importance, (p) => importanceChart(p, columns)),
      globalPart("SHAP values over the rows", parts.swarm, (p) => swarmChart(p, columns)),
      globalPart("A decision tree distilled from the model", parts.tree, treeRules),
    );
  };
}

/**
 * One part of the global tab: its heading, then its drawing, "computing…", or its error.
 * @param {string} heading
 * @param {any} part
 * @param {(part: any) => Node} draw
 * @returns {HTMLElement}
 */
function globalPart(heading, part, draw) {
  const box = element("section", "livexai-global-part");
  box.append(element("h4", null, heading));
  if (!part) box.append(element("div", "livexai-global-note", "computing…"));
  else if (part.error) box.append(element("div", "livexai-global-error", part.error));
  else box.append(draw(part));
  return box;
}

/**
 * Importance bars with the spread over repeats (± one standard deviation), most important first.
 * @param {{ mean: WireArray, std: WireArray, scoring: string, baseline: number, against: string }} part
 * @param {string[]} columns
 * @returns {Node}
 */
function importanceChart(part, columns) {
  const mean = decodeArray(part.mean);
  const std = decodeArray(part.std);
  const box = element("div");
  if (!mean || !std) return box;
  const order = Array.from(mean.values, (_, i) => i).sort((a, b) => mean.values[b] - mean.values[a]).slice(0, 12);
  const steps = order.map((i) => ({ label: columns[i], value: mean.values[i], start: 0, end: mean.values[i] }));
  const chart = stepsChart(steps, 0, true, order.map((i) => std.values[i]));
  box.append(
    element("div", "livexai-global-note", `drop in ${part.scoring} when a column is shuffled (scored against ${part.against}; unshuffled: ${formatValue(part.baseline)}); the line is ± one standard deviation over repeats`),
    chart,
  );
  return box;
}

/**
 * The beeswarm: for each of the most important features, one dot per explained row at its SHAP value, coloured
 * by the feature's value (blue low, red high).
 * @param {{ values: WireArray, data: WireArray, done: number, total: number, target: string }} part
 * @param {string[]} columns
 * @returns {Node}
 */
function swarmChart(part, columns) {
  const values = decodeArray(part.values);
  const data = decodeArray(part.data);
  const box = element("div");
  if (!values || !data) return box;
  const [n, f] = values.shape;
  const order = rankFeatures(values).slice(0, SWARM.features);
  const { width, row, label } = SWARM;
  const height = order.length * row + 24;
  let limit = 0;
  for (const v of values.values) limit = Math.max(limit, Math.abs(v));
  limit = limit || 1;
  const x = (/** @type {number} */ v) => label + ((v + limit) / (2 * limit)) * (width - label - 10);
  const svg = svgNode("svg", { class: "livexai-swarm", viewBox: `0 0 ${width} ${height}`, width, height, role: "img" });
  svg.setAttribute("aria-label", `SHAP values of ${n} rows for ${part.target}`);
  svg.append(svgNode("line", { class: "livexai-steps-axis", x1: x(0), x2: x(0), y1: 0, y2: height - 20 }));
  order.forEach((j, position) => {
    const y = position * row + row / 2;
    svg.append(svgText(columns[j], { class: "livexai-steps-label", x: label - 6, y: y + 4, "text-anchor": "end" }));
    const column = Array.from({ length: n }, (_, r) => data.values[r * f + j]);
    const shades = featureShades(column);
    for (let r = 0; r < n; r++) {
      const jitter = (((r * 7919) % 97) / 97 - 0.5) * row * 0.6;
      svg.append(svgNode("circle", { cx: x(values.values[r * f + j]), cy: y + jitter, r: 2.4, fill: shadeColour(shades[r]) }));
    }
  });
  svg.append(svgText(`SHAP value for “${part.target}” (dots: rows; red: high feature value, blue: low)`, { class: "livexai-steps-label", x: label, y: height - 6 }));
  box.append(element("div", "livexai-global-note", part.done < part.total ? `${part.done} of ${part.total} rows explained…` : `${part.total} rows`), svg);
  return box;
}

/**
 * The distilled tree as if/then rules, with its fidelity (agreement with the model on held-out rows).
 * @param {{ rules: string[], fidelity: number, accuracy: number | null, depth: number }} part
 * @returns {Node}
 */
function treeRules(part) {
  const box = element("div");
  const accuracy = part.accuracy === null ? "" : `, accuracy against the labels ${(part.accuracy * 100).toFixed(1)} %`;
  box.append(element("div", "livexai-global-note", `depth ${part.depth}: agrees with the model on ${(part.fidelity * 100).toFixed(1)} % of held-out rows${accuracy}`));
  const list = element("ol", "livexai-rules");
  for (const rule of part.rules) list.append(element("li", null, rule));
  box.append(list);
  return box;
}

// ---------------------------------------------------------------------------------------------------------------
// render
// ---------------------------------------------------------------------------------------------------------------

/**
 * anywidget's entry point: build the view in `el`, keep it in step with `model`, and return the cleanup that
 * removes every listener added here and the view itself.
 * @param {{ model: Model, el: HTMLElement }} options
 * @returns {() => void}
 */
function render({ model, el }) {
  const abort = new AbortController();
  /** @type {Array<[string, () => void]>} */
  const subscriptions = [];
  /** @type {(event: string, handler: () => void) => void} */
  const on = (event, handler) => {
    model.on(event, handler);
    subscriptions.push([event, handler]);
  };
  /** @type {Context} */
  const ctx = {
    model,
    listen: (node, event, handler) => node.addEventListener(event, handler, { signal: abort.signal }),
    send: (name, value) => {
      model.set(name, value);
      model.save_changes();
    },
    message: (content) => model.send(content),
  };
  const view = { ...DEFAULT_VIEW };
  const layout = buildLayout(model.get(TRAITS.kind) || "");
  el.append(layout.root);

  const status = statusSection(ctx, layout);
  const controls = controlsSection(ctx, layout.controls);
  const panels = panelsSection(ctx, layout, view);
  const viewControls = viewControlsSection(ctx, layout.viewControls, view, () => draw());
  // The panels and the top-k slider that fits them, redrawn together (also when a view control changes).
  const draw = () => {
    panels();
    viewControls();
  };
  /** @type {Array<[string[], () => void]>} the traits each section draws */
  const sections = [
    [[TRAITS.controls], () => controls()],
    [[TRAITS.title, TRAITS.status, TRAITS.error, TRAITS.progress, TRAITS.elapsedMs, TRAITS.nEvals], status],
    [[TRAITS.panels, TRAITS.image, TRAITS.channel, TRAITS.curves], draw],
    [[TRAITS.panels, TRAITS.predictions, TRAITS.target], predictionsSection(ctx, layout.predictions)],
    [[TRAITS.thumbnails, TRAITS.selected], stripSection(ctx, layout.strip)],
    [[TRAITS.correlation], correlationSection(ctx, layout.correlation)],
    [[TRAITS.sanity], sanitySection(ctx, layout.sanity)],
    [[TRAITS.featurevis], featurevisSection(ctx, layout.featurevis)],
  ];
  if (model.get(TRAITS.kind) === "text") {
    sections.push([[TRAITS.text, TRAITS.predictions, TRAITS.target], textSection(ctx, layout.text)]);
  }
  if (model.get(TRAITS.kind) === "tabular") {
    sections.push(
      [[TRAITS.view], tabsSection(ctx, layout.tabs)],
      [[TRAITS.table, TRAITS.selected, TRAITS.view], tableSection(ctx, layout.rows)],
      [[TRAITS.local, TRAITS.view], waterfallSection(ctx, layout.waterfall)],
      [[TRAITS.globalView, TRAITS.view, TRAITS.table], globalSection(ctx, layout.global)],
    );
  }
  for (const [names, update] of sections) {
    update();
    for (const name of names) on(`change:${name}`, () => update());
  }
  for (const name of PARAMETERS) on(`change:${name}`, () => controls(name));

  return () => {
    abort.abort();
    for (const [event, handler] of subscriptions) model.off(event, handler);
    layout.root.remove();
  };
}

export default { render };
