// Tests of the front end's pure functions: `node --test js/` (node 20, no npm packages).
import assert from "node:assert/strict";
import { test } from "node:test";

import widget, {
  COLORMAPS,
  DTYPES,
  MESSAGES,
  PARAMETERS,
  TRAITS,
  channelPixels,
  chartTop,
  curveLegend,
  curvePoints,
  colormapCss,
  colormapLUT,
  colorbarText,
  composeOverlay,
  controlValue,
  decodeArray,
  dilateMask,
  displayScale,
  fadeToGrey,
  formatValue,
  hexToRgb,
  imagePixels,
  mapPixels,
  normalise,
  paintMask,
  panelCaption,
  panelInfoText,
  percentileOf,
  pixelMask,
  pointingText,
  pointingTitle,
  resolveColormap,
  robustRange,
  sanityHeading,
  scaledBoundaries,
  segmentCount,
  featurevisCaption,
  featurevisHeading,
  textLegend,
  tokenScale,
  tokenShade,
  selectSegments,
  shownTarget,
  similarityText,
  statusText,
  timingText,
  upscaleNearest,
  valueRange,
  zeroTone,
} from "./widget.js";

test("the module loads without a DOM and exports render", () => {
  assert.equal(typeof globalThis.document, "undefined");
  assert.equal(typeof widget.render, "function");
});

test("decodeArray reads float32, int32 and uint8 from a DataView with an offset", () => {
  const floats = new Float32Array([1.5, -2, 3.25, 0]);
  const padded = new Uint8Array(8 + floats.byteLength);
  padded.set(new Uint8Array(floats.buffer), 8);
  const decoded = decodeArray({ data: new DataView(padded.buffer, 8), dtype: "float32", shape: [2, 2] });
  assert.deepEqual(decoded.shape, [2, 2]);
  assert.ok(decoded.values instanceof Float32Array);
  assert.deepEqual(Array.from(decoded.values), [1.5, -2, 3.25, 0]);

  const ints = new Int32Array([7, -1, 2 ** 30]);
  assert.deepEqual(Array.from(decodeArray({ data: ints.buffer, dtype: "int32", shape: [3] }).values), [7, -1, 2 ** 30]);
  const bytes = new Uint8Array([0, 128, 255]);
  assert.deepEqual(Array.from(decodeArray({ data: bytes, dtype: "uint8", shape: [1, 1, 3] }).values), [0, 128, 255]);
  assert.deepEqual(Object.keys(DTYPES), ["float32", "int32", "uint8"]);
});

test("decodeArray copies a misaligned buffer instead of failing", () => {
  const floats = new Float32Array([4, 5]);
  const padded = new Uint8Array(3 + floats.byteLength);
  padded.set(new Uint8Array(floats.buffer), 3);
  const decoded = decodeArray({ data: new DataView(padded.buffer, 3), dtype: "float32", shape: [2] });
  assert.deepEqual(Array.from(decoded.values), [4, 5]);
});

test("decodeArray refuses a wrong size or dtype, and passes null through", () => {
  assert.equal(decodeArray(null), null);
  assert.throws(() => decodeArray({ data: new ArrayBuffer(12), dtype: "float32", shape: [2, 2] }), /needs 16 bytes, got 12/);
  assert.throws(() => decodeArray({ data: new ArrayBuffer(8), dtype: "float64", shape: [1] }), /unsupported dtype/);
  assert.throws(() => decodeArray({ data: [1, 2], dtype: "uint8", shape: [2] }), /ArrayBuffer/);
});

test("colour maps: end points are the stops, the diverging map is white-ish in the middle", () => {
  assert.deepEqual(hexToRgb("#67001f"), [0x67, 0x00, 0x1f]);
  const lut = colormapLUT("red-blue", 257);
  assert.deepEqual(Array.from(lut.slice(0, 3)), [0x05, 0x30, 0x61]); // dark blue for the most negative
  assert.deepEqual(Array.from(lut.slice(256 * 3)), [0x67, 0x00, 0x1f]); // dark red for the most positive
  const middle = Array.from(lut.slice(128 * 3, 128 * 3 + 3));
  assert.ok(middle.every((c) => c > 240), `middle ${middle} should be near white`);
  const inferno = colormapLUT("inferno", 2);
  assert.deepEqual(Array.from(inferno), [0, 0, 4, 0xfc, 0xff, 0xa4]);
  assert.equal(colormapCss("grey", 2)[1], "rgb(255, 255, 255)");
  assert.ok(COLORMAPS.includes("auto"));
});

test("auto colour map: diverging for signed maps, sequential for CAM", () => {
  assert.equal(resolveColormap("auto", true), "red-blue");
  assert.equal(resolveColormap("auto", false), "inferno");
  assert.equal(resolveColormap("viridis", true), "viridis");
  assert.equal(resolveColormap("no-such-map", false), "inferno");
});

test("valueRange is symmetric for signed maps and starts at zero for non-negative ones", () => {
  assert.deepEqual(valueRange(new Float32Array([-0.5, 0.25, 2]), true), { low: -2, high: 2 });
  assert.deepEqual(valueRange(new Float32Array([0.5, 3]), false), { low: 0, high: 3 });
  assert.deepEqual(valueRange(new Float32Array([-1, 3]), false), { low: -1, high: 3 });
  assert.deepEqual(valueRange(new Float32Array([0, 0]), true), { low: -1, high: 1 });
  assert.deepEqual(valueRange(new Float32Array([2, 2]), false), { low: 0, high: 2 });
  assert.deepEqual(valueRange(new Float32Array([NaN, 1]), false), { low: 0, high: 1 });
  assert.equal(normalise(0, { low: -2, high: 2 }), 0.5);
  assert.equal(normalise(5, { low: -2, high: 2 }), 1);
});

test("selectSegments ranks by sign and keeps the top k", () => {
  const weights = new Float32Array([0.1, -0.9, 0.5, 0, -0.2, 0.5]);
  const flagged = (flags) => Array.from(flags).flatMap((f, i) => (f ? [i] : []));
  assert.deepEqual(flagged(selectSegments(weights, { sign: "positive" })), [0, 2, 5]);
  assert.deepEqual(flagged(selectSegments(weights, { sign: "positive", topK: 2 })), [2, 5]); // tie: index order
  assert.deepEqual(flagged(selectSegments(weights, { sign: "negative", topK: 1 })), [1]);
  assert.deepEqual(flagged(selectSegments(weights, { sign: "all", topK: 2 })), [1, 2]);
  assert.deepEqual(flagged(selectSegments(weights, { sign: "all" })), [0, 1, 2, 4, 5]); // zero weight: nothing to show
  assert.deepEqual(flagged(selectSegments(weights, { sign: "positive", topK: 99 })), [0, 2, 5]);
});

test("pixelMask maps superpixel flags to pixels, or filters pixel maps by sign", () => {
  const segments = new Int32Array([0, 0, 1, 2]);
  const weights = new Float32Array([1, -1, 0.5]);
  const values = new Float32Array([1, 1, -1, 0.5]);
  assert.deepEqual(Array.from(pixelMask(values, { segments, weights, topK: 1 })), [1, 1, 0, 0]);
  assert.deepEqual(Array.from(pixelMask(values, { segments, weights, sign: "negative" })), [0, 0, 1, 0]);
  const cam = new Float32Array([0, 0.2, -0.1, 1]);
  assert.deepEqual(Array.from(pixelMask(cam, { sign: "positive" })), [0, 1, 0, 1]);
  assert.deepEqual(Array.from(pixelMask(cam, { sign: "all", topK: 1 })), [1, 1, 1, 1]); // top-k: superpixels only
});

test("composeOverlay: opacity 0 and zero evidence leave the image, strong evidence shows the map's colour", () => {
  const image = new Uint8Array([10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120]);
  const values = new Float32Array([0, 1, -1, 0.5]);
  const range = { low: -1, high: 1 };
  const plain = composeOverlay({ image, values, width: 2, height: 2, range, colormap: "red-blue", signed: true, opacity: 0 });
  assert.deepEqual(Array.from(plain.slice(0, 4)), [10, 20, 30, 255]);
  assert.deepEqual(Array.from(plain.slice(12, 16)), [100, 110, 120, 255]);

  const full = composeOverlay({ image, values, width: 2, height: 2, range, colormap: "red-blue", signed: true, opacity: 1 });
  assert.deepEqual(Array.from(full.slice(0, 3)), [10, 20, 30]); // zero: untouched
  assert.deepEqual(Array.from(full.slice(4, 7)), [0x67, 0x00, 0x1f]); // +1: dark red
  assert.deepEqual(Array.from(full.slice(8, 11)), [0x05, 0x30, 0x61]); // -1: dark blue
  // +0.5 at full opacity: half-way between the image and the colour at t = 0.75
  const lut = colormapLUT("red-blue", 256);
  const k = Math.round(0.75 * 255) * 3;
  const expected = [100, 110, 120].map((c, i) => Math.round(c * 0.5 + lut[k + i] * 0.5));
  Array.from(full.slice(12, 15)).forEach((c, i) => assert.ok(Math.abs(c - expected[i]) <= 1, `${c} vs ${expected[i]}`));
});

test("composeOverlay: non-negative maps blend in proportion to the value; hide-the-rest and borders", () => {
  const image = new Uint8Array(12).fill(200);
  const values = new Float32Array([0, 1, 1, 0.5]);
  const cam = composeOverlay({ image, values, width: 2, height: 2, range: { low: 0, high: 1 }, colormap: "grey", opacity: 0.5 });
  assert.deepEqual(Array.from(cam.slice(0, 3)), [200, 200, 200]); // zero: the image untouched
  assert.deepEqual(Array.from(cam.slice(4, 7)), [228, 228, 228]); // 200 * 0.5 + 255 * 0.5 (rounded)
  // 0.5 -> alpha 0.25, grey level round(0.5 * 255) = 128: 200 * 0.75 + 128 * 0.25 = 182
  assert.deepEqual(Array.from(cam.slice(12, 15)), [182, 182, 182]);

  const mask = new Uint8Array([1, 0, 0, 1]);
  const hidden = composeOverlay({ image, values, width: 2, height: 2, mask, range: { low: 0, high: 1 }, opacity: 0, hideRest: true });
  assert.deepEqual(Array.from(hidden.slice(0, 3)), [200, 200, 200]);
  assert.deepEqual(Array.from(hidden.slice(4, 7)), [0, 0, 0]);
  const shownOnly = composeOverlay({ image, values, width: 2, height: 2, mask, range: { low: 0, high: 1 }, opacity: 1 });
  assert.deepEqual(Array.from(shownOnly.slice(4, 7)), [200, 200, 200]); // unmasked and not hidden: the image

  assert.throws(() => composeOverlay({ values, width: 3, height: 2, range: { low: 0, high: 1 } }), /expected 3x2/);
});

test("composeOverlay without an image draws over mid-grey", () => {
  const out = composeOverlay({ values: new Float32Array([0]), width: 1, height: 1, range: { low: -1, high: 1 }, signed: true });
  assert.deepEqual(Array.from(out), [128, 128, 128, 255]);
});

test("small maps are enlarged with nearest neighbours and borders stay one display pixel thin", () => {
  assert.equal(displayScale(32, 32), 7);
  assert.equal(displayScale(224, 224), 1);
  assert.equal(displayScale(300, 100), 1);
  const rgba = new Uint8ClampedArray([1, 2, 3, 4, 5, 6, 7, 8]); // 2x1
  const big = upscaleNearest(rgba, 2, 1, 2); // 4x2
  assert.deepEqual(Array.from(big.slice(0, 16)), [1, 2, 3, 4, 1, 2, 3, 4, 5, 6, 7, 8, 5, 6, 7, 8]);
  assert.deepEqual(Array.from(big.slice(16, 32)), Array.from(big.slice(0, 16)));
  assert.equal(upscaleNearest(rgba, 2, 1, 1), rgba);
  // labels 0 1 / 0 0 at zoom 2: right edge of (0,0) and bottom edge of (1,0)
  const edge = scaledBoundaries(new Int32Array([0, 1, 0, 0]), 2, 2, 2);
  const rows = [0, 1, 2, 3].map((y) => Array.from(edge.slice(y * 4, y * 4 + 4)).join(""));
  assert.deepEqual(rows, ["0100", "0111", "0000", "0000"]);
  const painted = paintMask(new Uint8ClampedArray(8), new Uint8Array([0, 1]), [9, 8, 7]);
  assert.deepEqual(Array.from(painted), [0, 0, 0, 0, 9, 8, 7, 0]);
});

test("channelPixels scales each channel to its own range", () => {
  const out = channelPixels(new Float32Array([2, 4]), "grey");
  assert.deepEqual(Array.from(out), [0, 0, 0, 255, 255, 255, 255, 255]);
  assert.deepEqual(Array.from(channelPixels(new Float32Array([3, 3]), "grey").slice(0, 4)), [0, 0, 0, 255]);
});

test("texts: timing, status and numbers", () => {
  assert.equal(timingText(1234.4, 1000), "computed in 1,234 ms (1,000 model evaluations)");
  assert.equal(timingText(5, 1), "computed in 5 ms (1 model evaluation)");
  assert.equal(statusText("computing", 0.42), "computing 42%");
  assert.equal(statusText("computing", 0), "computing");
  assert.equal(statusText("idle", 1), "idle");
  assert.equal(statusText("error", 0), "error");
  assert.equal(formatValue(0.123456), "0.123");
  assert.equal(formatValue(-12.5), "-12.5");
  assert.equal(formatValue(0), "0");
  assert.equal(formatValue(0.00001234), "1.23e-5");
});

/** A wire array as Python's to_wire sends it (the buffer arrives as a DataView). */
function wire(Ctor, values, shape) {
  return { data: new DataView(new Ctor(values).buffer), dtype: Ctor.name.replace("Array", "").toLowerCase(), shape };
}

/** A panel as Python's panel() builds it, with `fields` changed. */
function panel(fields = {}) {
  const base = { key: "lime", title: "LIME", status: "done", progress: 1, note: "", method: "lime", map: null };
  const result = { segments: null, weights: null, signed: true, elapsed_ms: 12, n_evals: 100, target: null };
  return { ...base, ...result, ...fields };
}

test("trait lists: shared names appear once, parameters apart from view traits", () => {
  const names = [...Object.values(TRAITS), ...PARAMETERS];
  assert.equal(new Set(names).size, names.length);
  assert.ok(PARAMETERS.includes("n_segments"));
  assert.equal(TRAITS.elapsedMs, "elapsed_ms");
});

test("imagePixels turns (H, W, 3) RGB into opaque RGBA", () => {
  const decoded = { values: new Uint8Array([1, 2, 3, 4, 5, 6]), shape: [1, 2, 3] };
  assert.deepEqual(Array.from(imagePixels(decoded)), [1, 2, 3, 255, 4, 5, 6, 255]);
});

test("mapPixels applies the view: top-k mask, hide the rest, enlargement and borders", () => {
  const map = decodeArray(wire(Float32Array, [1, -1, 0.5, 0.5], [2, 2]));
  const segments = decodeArray(wire(Int32Array, [0, 1, 2, 2], [2, 2]));
  const weights = decodeArray(wire(Float32Array, [1, -1, 0.5], [3]));
  const image = decodeArray(wire(Uint8Array, new Array(12).fill(200), [2, 2, 3]));
  const view = { opacity: 0, colormap: "auto", underlay: "colour", sign: "all", topK: 2, hideRest: true, boundaries: false };
  const drawn = mapPixels(map, { segments, weights, image, signed: true }, view);
  assert.equal(drawn.width, 2 * displayScale(2, 2));
  assert.equal(drawn.height, drawn.width);
  assert.equal(drawn.colormap, "red-blue");
  assert.deepEqual(drawn.range, { low: -1, high: 1, min: -1, max: 1, clipped: false });
  const pixel = (x, y) => Array.from(drawn.rgba.slice((y * drawn.width + x) * 4, (y * drawn.width + x) * 4 + 3));
  assert.deepEqual(pixel(0, 0), [200, 200, 200]); // superpixel 0 kept: the image (opacity 0)
  assert.deepEqual(pixel(drawn.width - 1, drawn.height - 1), [0, 0, 0]); // superpixel 2 is third strongest: hidden

  // The default underlay: the image in faded grey, pulled toward red-blue's near-white middle.
  const greyView = { ...view, underlay: undefined };
  const grey = mapPixels(map, { segments, weights, image, signed: true }, greyView);
  const g = Array.from(grey.rgba.slice(0, 3));
  assert.ok(g[0] === g[1] && g[1] === g[2] && g[0] > 200, `${g} should be a light grey`);

  const outlined = { ...view, boundaries: true, hideRest: false };
  const small = mapPixels(map, { segments, weights, image: null, signed: false }, outlined);
  const factor = displayScale(2, 2);
  assert.equal(small.colormap, "inferno");
  const border = (factor - 1) * 4; // the last display column of pixel (0, 0), whose right neighbour differs
  assert.deepEqual(Array.from(small.rgba.slice(border, border + 3)), [250, 250, 250]); // the light line
  const outline = (factor - 2) * 4; // its left neighbour: the dark outline
  assert.deepEqual(Array.from(small.rgba.slice(outline, outline + 3)), [24, 24, 24]);
});

test("percentileOf and robustRange: one outlier does not flatten the rest", () => {
  const values = new Float32Array(1000).map((_, i) => ((i % 10) - 4.5) / 4.5); // spread over [-1, 1]
  values[7] = 500; // one extreme pixel
  assert.equal(percentileOf(values, 100, true), 500);
  assert.ok(Math.abs(percentileOf(values, 99, true) - 1) < 1e-6);
  assert.ok(Number.isNaN(percentileOf([NaN], 50)));

  const signed = robustRange(values, true);
  assert.ok(Math.abs(signed.high - 1) < 1e-6 && signed.low === -signed.high, JSON.stringify(signed));
  assert.equal(signed.max, 500);
  assert.equal(signed.clipped, true);
  // The rest keeps its contrast: a value of 1 reaches the end colour instead of 1/500 of the way.
  assert.equal(normalise(1, signed), 1);
  assert.equal(normalise(500, signed), 1); // clipped
  assert.equal(valueRange(values, true).high, 500); // the plain range would squash the rest to the middle

  const cam = new Float32Array(1000).map((_, i) => (i % 100) / 100);
  cam[0] = 80;
  const camRange = robustRange(cam, false);
  assert.equal(camRange.low, 0);
  assert.ok(camRange.high < 1 && camRange.clipped, JSON.stringify(camRange));

  // No outlier: nothing clipped, the true extremes. Mostly zero: falls back to the largest value.
  assert.deepEqual(robustRange([-2, 1, 0.5], true), { low: -2, high: 2, min: -2, max: 1, clipped: false });
  const sparse = new Float32Array(1000);
  sparse[3] = 0.5;
  assert.deepEqual(robustRange(sparse, true), { low: -0.5, high: 0.5, min: 0, max: 0.5, clipped: false });
  assert.deepEqual(robustRange([], false), { low: 0, high: 1, min: 0, max: 0, clipped: false });
});

test("colorbarText: end labels at the clip value, a note with the true range when clipped", () => {
  assert.deepEqual(colorbarText({ low: -1, high: 1, min: -0.5, max: 1, clipped: false }, true), {
    labels: ["-1", "0", "1"],
    note: "",
  });
  assert.deepEqual(colorbarText({ low: 0, high: 0.3, min: 0, max: 2.5, clipped: true }, false), {
    labels: ["0", "0.3"],
    note: "clipped at p99; range 0\u2060…\u20602.5",
  });
});

test("fadeToGrey: greyscale faded toward a tone, alpha kept, RGB or RGBA", () => {
  const rgba = new Uint8ClampedArray([255, 0, 0, 200, 0, 0, 0, 255, 255, 255, 255, 255]);
  const none = fadeToGrey(rgba, { fade: 0 });
  assert.deepEqual(Array.from(none.slice(0, 4)), [76, 76, 76, 200]); // luma of pure red: 0.299 * 255
  const half = fadeToGrey(rgba, { fade: 0.5, tone: 255 });
  assert.deepEqual(Array.from(half.slice(4, 8)), [128, 128, 128, 255]); // black halfway to white
  assert.deepEqual(Array.from(half.slice(8, 12)), [255, 255, 255, 255]);
  const dark = fadeToGrey(new Uint8Array([255, 255, 255]), { channels: 3, fade: 0.75, tone: 0 });
  assert.deepEqual(Array.from(dark), [64, 64, 64]);
  // A maroon object and a red overlay: in colour they are close, over the grey underlay they differ in hue.
  const maroon = [128, 20, 40];
  const [grey] = fadeToGrey(new Uint8Array(maroon), { channels: 3 });
  assert.ok(grey > 150, `faded maroon ${grey} should be light`);
  assert.ok(zeroTone("red-blue", true) > 230 && zeroTone("inferno", false) < 10);
});

test("dilateMask grows a mask to its four neighbours", () => {
  const mask = new Uint8Array(9);
  mask[4] = 1;
  assert.deepEqual(Array.from(dilateMask(mask, 3, 3)), [0, 1, 0, 1, 1, 1, 0, 1, 0]);
});

test("segmentCount: the most superpixels any panel has", () => {
  assert.equal(segmentCount([]), 0);
  assert.equal(segmentCount([panel(), panel({ weights: wire(Float32Array, [1, 2, 3], [3]) })]), 3);
});

test("shownTarget: the chosen class, else the one explained, else the top prediction", () => {
  const predictions = [{ index: 4, label: "a", probability: 0.9 }];
  assert.equal(shownTarget(2, [panel({ target: 1 })], predictions), 2);
  assert.equal(shownTarget(null, [panel(), panel({ target: 1 })], predictions), 1);
  assert.equal(shownTarget(null, [panel()], predictions), 4);
  assert.equal(shownTarget(0, [], predictions), 0);
});

test("controlValue rounds integer parameters only", () => {
  assert.equal(controlValue("int", "40.6"), 41);
  assert.equal(controlValue("float", "0.25"), 0.25);
  assert.ok(Number.isNaN(controlValue("float", "x")));
});

test("panel texts: caption with progress, info line with timing or state", () => {
  assert.equal(panelCaption(panel()), "LIME");
  assert.equal(panelCaption(panel({ status: "partial", progress: 0.42 })), "LIME · 42%");
  assert.equal(panelInfoText(panel()), "computing…");
  assert.equal(panelInfoText(panel({ status: "error" })), "failed");
  assert.equal(panelInfoText(panel({ status: "error", note: "out of memory" })), "out of memory");
  const map = wire(Float32Array, [1], [1, 1]);
  assert.equal(panelInfoText(panel({ map })), "computed in 12 ms (100 model evaluations)");
  assert.equal(panelInfoText(panel({ map, note: "R² 0.9" })), "computed in 12 ms (100 model evaluations) · R² 0.9");
});

test("curvePoints maps fractions and scores into the chart, y up, clipped, skipping missing scores", () => {
  const options = { width: 100, height: 50, pad: 0, top: 1 };
  assert.equal(curvePoints([0, 0.5, 1], [1, 0.5, 0], options), "0,0 50,25 100,50");
  assert.equal(curvePoints([0, 1], [2, -1], options), "0,0 100,50"); // beyond the axis: drawn at its ends
  assert.equal(curvePoints([0, 0.5, 1], [0, NaN, 1], options), "0,50 100,0");
  assert.equal(curvePoints([0, 1], [0, 4], { ...options, top: 4 }), "0,50 100,0");
  assert.equal(curvePoints([0, 1], [0, 1], { width: 100, height: 50, pad: 5 }), "5,45 95,5");
});

test("chartTop is 1 for probabilities and the highest score otherwise", () => {
  assert.equal(chartTop([[0.2, 0.9], [0.1]]), 1);
  assert.equal(chartTop([[0.2, 3.5], [-2]]), 3.5);
});

test("curveLegend says each AUC and which way is better", () => {
  const legend = curveLegend({ status: "done", note: "", deletion_auc: 0.1234, insertion_auc: 0.9 });
  assert.equal(legend.deletion, "deletion AUC 0.12 (lower is better)");
  assert.equal(legend.insertion, "insertion AUC 0.90 (higher is better)");
  assert.match(curveLegend({ status: "done", note: "" }).deletion, /AUC – /);
});

test("pointingText gives the verdict, the evidence on the object and the chance level", () => {
  const pointing = { hit: true, energy: 0.746, tolerance: 4, share: 0.072 };
  assert.equal(pointingText(pointing), "points at the object · 75% of its evidence on it (object: 7% of the image)");
  assert.match(pointingText({ ...pointing, hit: false, energy: 0 }), /^misses the object · 0% /);
  assert.match(pointingTitle(pointing), /within 4 px .* \(7% if spread evenly\)$/);
});

test("the sanity strip's texts: heading with progress, similarity under each map", () => {
  const strip = {
    status: "computing", key: "cam", title: "Grad-CAM", summary: "", passed: null, done: 3, total: 9, layers: [],
    similarity: null, maps: null, image: null, signed: false,
  };
  assert.match(sanityHeading(strip), /^sanity check · Grad-CAM: .* · 3 of 9 layers$/);
  assert.doesNotMatch(sanityHeading({ ...strip, status: "done", done: 9 }), /of 9 layers/);
  assert.equal(similarityText(0.4249), "0.42");
  assert.equal(similarityText(-0.051), "-0.05");
  assert.equal(similarityText(NaN), "–");
  assert.equal(MESSAGES.sanityCheck, "sanity_check");
  assert.equal(TRAITS.curves, "curves");
  assert.equal(TRAITS.sanity, "sanity");
});

// -- tables (TabularExplorer) --------------------------------------------------------------------------------------
test("waterfallSteps: largest contributions first from the base, the rest summed, ending at base + sum", async () => {
  const { waterfallSteps } = await import("./widget.js");
  const steps = waterfallSteps([0.5, -2, 0.1, 1], ["a", "b", "c", "d"], 10, 2);
  assert.deepEqual(steps.map((s) => s.label), ["b", "d", "2 other features"]);
  assert.equal(steps[0].start, 10);
  assert.equal(steps[0].end, 8);
  assert.equal(steps[1].end, 9);
  assert.ok(Math.abs(steps[2].value - 0.6) < 1e-12);
  assert.ok(Math.abs(steps.at(-1).end - 9.6) < 1e-12); // 10 + 0.5 - 2 + 0.1 + 1
  assert.equal(waterfallSteps([1, 2], ["a", "b"], 0).length, 2); // nothing left over: no summed bar
});

test("sortRows: by prediction, confidence or label, ties in row order, either direction", async () => {
  const { sortRows } = await import("./widget.js");
  const rows = { predicted: [1, 0, 1, 0], confidence: [0.9, 0.6, 0.7, 0.99], labels: [1, 1, 0, 0] };
  assert.deepEqual(sortRows(rows, "row", false), [0, 1, 2, 3]);
  assert.deepEqual(sortRows(rows, "prediction", false), [1, 3, 0, 2]);
  assert.deepEqual(sortRows(rows, "confidence", true), [3, 0, 2, 1]);
  assert.deepEqual(sortRows(rows, "label", false), [2, 3, 0, 1]);
  assert.deepEqual(sortRows({ ...rows, labels: null }, "label", false), [0, 1, 2, 3]);
});

test("featureShades and shadeColour: 5th-95th percentile scaling, blue low to red high", async () => {
  const { featureShades, shadeColour, rankFeatures } = await import("./widget.js");
  const column = Array.from({ length: 21 }, (_, i) => i);
  const shades = featureShades(column);
  assert.equal(shades[0], 0);
  assert.equal(shades[20], 1);
  assert.ok(Math.abs(shades[10] - 0.5) < 0.06);
  assert.deepEqual(featureShades([3, 3, 3]), [0.5, 0.5, 0.5]);
  assert.equal(shadeColour(0), "rgb(42,113,178)");
  assert.equal(shadeColour(1), "rgb(186,40,50)");
  const matrix = { values: new Float32Array([0.1, -3, 1, 0.2, 2, -1]), shape: [2, 3] };
  assert.deepEqual(rankFeatures(matrix), [1, 2, 0]);
});

test("tokens are shaded red for, blue against, by strength relative to the sentence's largest value", () => {
  const strongest = tokenShade(-2, 2, true);
  assert.equal(strongest.background, "rgba(31, 119, 180, 0.8)");
  assert.equal(strongest.light, true);
  const weak = tokenShade(0.5, 2, true);
  assert.equal(weak.background, "rgba(214, 39, 40, 0.2)");
  assert.equal(weak.light, false);
  assert.equal(tokenShade(0, 0, true).strength, 0); // an all-zero sentence stays uncoloured
  assert.equal(tokenShade(Number.NaN, 1, true).strength, 0);
  assert.equal(tokenShade(1, 1, false).background, "rgba(230, 120, 0, 0.8)"); // attention: one colour
  assert.equal(tokenShade(-1, 1, false).strength, 0);
});

test("the colour scale ignores padding and the legend names the class", () => {
  const values = Float32Array.from([0.5, -3, 9, 9]);
  const content = Uint8Array.from([1, 1, 0, 0]);
  assert.equal(tokenScale(values, content, true), 3);
  assert.equal(tokenScale(values, content, false), 0.5);
  assert.match(textLegend(true, "positive"), /red: pushes toward "positive"/);
  assert.equal(textLegend(false, "positive"), "darker: more attention");
});

test("the feature visualisation's heading says how far it is and its caption what it gained", () => {
  const fv = { status: "partial", note: "", layer: "features.conv3", channel: 5, optimisation: "robust", step: 32, steps: 128,
    image: null, activation: 19.82, random_activation: 1.2168, top: null, top_values: [], top_indices: [] };
  assert.equal(featurevisHeading(fv), "what channel 5 of features.conv3 looks for · robust optimisation · step 32/128");
  assert.equal(featurevisHeading({ ...fv, status: "done" }), "what channel 5 of features.conv3 looks for · robust optimisation · 128 steps");
  assert.equal(featurevisCaption(fv), "activation 19.8 (random image 1.22)");
  assert.equal(featurevisCaption({ ...fv, activation: null }), "optimising…");
});
