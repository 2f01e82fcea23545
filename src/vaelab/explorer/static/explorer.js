// vaelab latent explorer: draws the test set's latent means, decodes the point under the pointer
// through the run's decoder (POST /api/decode), interpolates between two clicked points and draws
// samples from the prior. No dependencies; served by vaelab itself so it works offline.
// `startExplorer(root, api)` runs it inside `root` with `api(path, body)` answering its requests:
// over HTTP on the served page, over the widget's comm in a notebook (widget.js).
// Images come as PNG (greyscale or RGB) of the run's own height and width; unlabelled test sets
// are drawn in one colour without a legend.
"use strict";

const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
  "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
const PAD = 20;
const STEPS = 10;
const SAMPLES = 10;
const UNLABELLED = "#1f77b4";
const LEGEND_CLASSES = 20; // past these, one line says how many more there are
const DECODED_BOX = 280; // CSS pixels of the enlarged image's longer side
const STRIP_BOX = 80;

// A server that wants a token puts it in the page's URL (?token=...); every API request sends it.
const TOKEN = new URLSearchParams(window.location.search).get("token");

async function httpApi(path, body) {
  const headers = TOKEN ? { Authorization: `Bearer ${TOKEN}` } : {};
  const options = body === undefined ? { headers } : {
    method: "POST",
    headers: { ...headers, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  };
  const response = await fetch(path, options);
  const payload = await response.json();
  if (!response.ok) throw new Error(payload.error || `${response.status} ${response.statusText}`);
  return payload;
}

// The explorer inside `root` (the page's body, or a notebook widget's element): the elements
// of index.html's body are looked up under it, and `api(path, body)` returns what the JSON API
// answers (a promise; rejected with the API's one-line message).
function startExplorer(root, api) {
  const el = (id) => root.querySelector(`#${id}`);
  const state = {
    data: null, frame: null, base: null, z: null,
    picks: [], samples: [], pending: null, busy: false, label: 0,
  };

  // A conditional model decodes every code as the chosen class; other models take no class.
  const withClass = (body) => (state.data.conditional ? { ...body, class: state.label } : body);

  function showError(error) {
    el("status").textContent = String(error.message || error);
  }

  function colour(label) {
    // Past ten classes, spread hues by the golden angle so neighbours differ.
    if (label === null) return UNLABELLED;
    return label < PALETTE.length ? PALETTE[label] : `hsl(${(label * 137.5) % 360}, 60%, 45%)`;
  }

  // An image of the run's height and width, scaled so that its longer side is `box` CSS pixels.
  function fit(img, box) {
    const [height, width] = state.data.image_shape;
    const scale = box / Math.max(height, width);
    img.style.width = `${Math.round(width * scale)}px`;
    img.style.height = `${Math.round(height * scale)}px`;
  }

  // ------------------------------------------------------------ latent <-> page coordinates

  function toLatent(x, y) {
    const { mean, components } = state.data.view;
    return mean.map((m, i) => m + x * components[0][i] + y * components[1][i]);
  }

  function fromLatent(z) {
    const { mean, components } = state.data.view;
    let x = 0, y = 0;
    z.forEach((value, i) => {
      x += (value - mean[i]) * components[0][i];
      y += (value - mean[i]) * components[1][i];
    });
    return [x, y];
  }

  function extent(values) {
    let low = Infinity, high = -Infinity;
    for (const v of values) { if (v < low) low = v; if (v > high) high = v; }
    if (!(high > low)) { low = (isFinite(low) ? low : 0) - 1; high = low + 2; }
    const margin = 0.04 * (high - low);
    return [low - margin, high + margin];
  }

  // One scale for both axes: distances on the map are distances in the latent plane.
  function makeFrame(canvas, xs, ys) {
    let [x0, x1] = extent(xs), [y0, y1] = extent(ys);
    const half = Math.max(x1 - x0, y1 - y0) / 2;
    [x0, x1] = [(x0 + x1) / 2 - half, (x0 + x1) / 2 + half];
    [y0, y1] = [(y0 + y1) / 2 - half, (y0 + y1) / 2 + half];
    const w = canvas.width - 2 * PAD, h = canvas.height - 2 * PAD;
    return {
      toPixel: (x, y) => [PAD + ((x - x0) / (x1 - x0)) * w, PAD + ((y1 - y) / (y1 - y0)) * h],
      toData: (px, py) => [x0 + ((px - PAD) / w) * (x1 - x0), y1 - ((py - PAD) / h) * (y1 - y0)],
    };
  }

  // ------------------------------------------------------------ drawing

  function drawBase(canvas) {
    const base = document.createElement("canvas");
    base.width = canvas.width;
    base.height = canvas.height;
    const ctx = base.getContext("2d");
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, base.width, base.height);
    const [ox, oy] = state.frame.toPixel(0, 0);
    ctx.strokeStyle = "#e3e6eb";
    ctx.beginPath();
    ctx.moveTo(0, oy); ctx.lineTo(base.width, oy);
    ctx.moveTo(ox, 0); ctx.lineTo(ox, base.height);
    ctx.stroke();
    const { x, y, labels } = state.data;
    ctx.globalAlpha = 0.65;
    for (let i = 0; i < x.length; i++) {
      const [px, py] = state.frame.toPixel(x[i], y[i]);
      ctx.fillStyle = colour(labels ? labels[i] : null);
      ctx.fillRect(px - 1.5, py - 1.5, 3, 3);
    }
    return base;
  }

  function ring(ctx, z, radius, text) {
    const [px, py] = state.frame.toPixel(...fromLatent(z));
    ctx.beginPath();
    ctx.arc(px, py, radius, 0, 2 * Math.PI);
    ctx.stroke();
    if (text) ctx.fillText(text, px + radius + 2, py - radius);
    return [px, py];
  }

  function render() {
    const canvas = el("scatter");
    const ctx = canvas.getContext("2d");
    ctx.drawImage(state.base, 0, 0);
    ctx.lineWidth = 1.5;
    ctx.strokeStyle = "#111";
    ctx.fillStyle = "#111";
    ctx.font = "bold 13px system-ui, sans-serif";
    for (const z of state.samples) ring(ctx, z, 3);
    const ends = state.picks.map((z, i) => ring(ctx, z, 6, "AB"[i]));
    if (ends.length === 2) {
      ctx.setLineDash([4, 3]);
      ctx.beginPath();
      ctx.moveTo(...ends[0]); ctx.lineTo(...ends[1]);
      ctx.stroke();
      ctx.setLineDash([]);
    }
    if (state.z) {
      ctx.strokeStyle = "#c2185b";
      ring(ctx, state.z, 8);
    }
  }

  function strip(container, images, zs) {
    container.replaceChildren(...images.map((src, i) => {
      const img = new Image();
      fit(img, STRIP_BOX);
      img.src = src;
      img.alt = `decoded at z = ${formatZ(zs[i])}`;
      img.title = img.alt;
      img.addEventListener("click", () => setZ(zs[i]));
      return img;
    }));
  }

  function formatZ(z) {
    const shown = z.slice(0, 8).map((v) => v.toFixed(3)).join(", ");
    return `(${shown}${z.length > 8 ? ", ..." : ""})`;
  }

  // ------------------------------------------------------------ decoding

  // One request in flight at a time; while it runs only the newest point waits, so a fast pointer
  // never queues stale work.
  function requestDecode(z) {
    state.pending = z;
    if (!state.busy) pump();
  }

  async function pump() {
    state.busy = true;
    while (state.pending) {
      const z = state.pending;
      state.pending = null;
      try {
        const answer = await api("/api/decode", withClass({ z: [z] }));
        el("decoded").src = answer.images[0];
        el("decoded").dataset.z = JSON.stringify(z);
      } catch (error) {
        showError(error);
      }
    }
    state.busy = false;
  }

  function setZ(z, fromSlider = false) {
    state.z = z;
    el("z-text").textContent = `z = ${formatZ(z)}`;
    if (!fromSlider) syncSliders(z);
    render();
    requestDecode(z);
  }

  async function interpolate() {
    const [start, end] = state.picks;
    try {
      const answer = await api("/api/interpolate", withClass({ start, end, steps: STEPS }));
      el("interp-ends").textContent = `A ${formatZ(start)} to B ${formatZ(end)}, ${STEPS} steps`;
      strip(el("interpolation"), answer.images, answer.z);
    } catch (error) {
      showError(error);
    }
  }

  async function sample() {
    try {
      const answer = await api("/api/sample", withClass({ count: SAMPLES }));
      state.samples = answer.z;
      strip(el("samples"), answer.images, answer.z);
      render();
    } catch (error) {
      showError(error);
    }
  }

  // The samples' codes decoded again, as the class now chosen.
  async function redecodeSamples() {
    if (!state.samples.length) return;
    try {
      const answer = await api("/api/decode", withClass({ z: state.samples }));
      strip(el("samples"), answer.images, state.samples);
    } catch (error) {
      showError(error);
    }
  }

  // ------------------------------------------------------------ controls

  // A conditional model: a selector of the class every image is decoded as.
  function buildClassSelector() {
    if (!state.data.conditional) return;
    const label = document.createElement("label");
    label.id = "class-box";
    const select = document.createElement("select");
    select.id = "class";
    for (let c = 0; c < state.data.classes; c++) {
      const option = document.createElement("option");
      option.value = String(c);
      option.textContent = state.data.class_names[c] ?? String(c);
      select.append(option);
    }
    select.addEventListener("change", () => {
      state.label = Number(select.value);
      if (state.z) requestDecode(state.z);
      if (state.picks.length === 2) interpolate();
      redecodeSamples();
    });
    label.append("decode as class ", select);
    el("sample").before(label);
  }

  function buildSliders() {
    const { latent_dim: dim, latent_min: low, latent_max: high } = state.data;
    if (dim <= 2) return;
    const rows = [];
    for (let i = 0; i < dim; i++) {
      // The test set's range, and at least the prior's +-3, where it puts 99.7% of its mass.
      const min = Math.min(low[i], -3), max = Math.max(high[i], 3);
      const label = document.createElement("label");
      const name = document.createElement("span");
      name.textContent = `z[${i}]`;
      const input = document.createElement("input");
      Object.assign(input, { type: "range", min, max, step: (max - min) / 1000 });
      input.dataset.dim = i;
      const value = document.createElement("output");
      input.addEventListener("input", () => {
        const z = state.z.slice();
        z[i] = Number(input.value);
        value.textContent = z[i].toFixed(3);
        setZ(z, true);
      });
      label.append(name, input, value);
      rows.push(label);
    }
    el("sliders").replaceChildren(...rows);
  }

  function syncSliders(z) {
    for (const input of el("sliders").querySelectorAll("input")) {
      const i = Number(input.dataset.dim);
      input.value = z[i];
      input.nextElementSibling.textContent = z[i].toFixed(3);
    }
  }

  function pointerLatent(canvas, event) {
    const rect = canvas.getBoundingClientRect();
    const px = ((event.clientX - rect.left) * canvas.width) / rect.width;
    const py = ((event.clientY - rect.top) * canvas.height) / rect.height;
    return toLatent(...state.frame.toData(px, py));
  }

  function imageKind(data) {
    const [height, width] = data.image_shape;
    const channels = data.channels || 1;
    const kind = channels === 1 ? "greyscale" : channels === 3 ? "RGB" : `${channels}-channel`;
    return `${kind} ${height}\u00d7${width}`;
  }

  function describe(data) {
    const { view } = data;
    const labelled = data.labels ? "" : ", unlabelled";
    el("run-info").textContent = `run ${data.run}: ${data.x.length} ${imageKind(data)} test ` +
      `images${labelled} from ${data.source}; latent dimension ${data.latent_dim}` +
      (view.kind === "pca" ? "; the map shows the plane of the first two principal components" : "");
    if (view.kind === "pca") {
      const [a, b] = view.explained_variance.map((v) => `${(100 * v).toFixed(1)}% of variance`);
      el("x-label").textContent = `PC 1 (${a})`;
      el("y-label").textContent = `PC 2 (${b})`;
    } else {
      el("x-label").textContent = "z[0]";
      el("y-label").textContent = data.latent_dim > 1 ? "z[1]" : "(none)";
    }
    el("legend").replaceChildren(...legendItems(data));
  }

  // One entry per class present, in index order, at most LEGEND_CLASSES; none without labels.
  function legendItems(data) {
    if (!data.labels) return [];
    const counts = new Map();
    for (const label of data.labels) counts.set(label, (counts.get(label) || 0) + 1);
    const present = [...counts.keys()].sort((a, b) => a - b);
    const items = present.slice(0, LEGEND_CLASSES).map((label) => {
      const item = document.createElement("li");
      const dot = document.createElement("i");
      dot.style.background = colour(label);
      item.append(dot, `${data.class_names[label] ?? label} (${counts.get(label)})`);
      return item;
    });
    const rest = present.slice(LEGEND_CLASSES);
    if (rest.length) {
      const images = rest.reduce((sum, label) => sum + counts.get(label), 0);
      const item = document.createElement("li");
      item.className = "more";
      item.textContent = `and ${rest.length} more classes (${images} images)`;
      items.push(item);
    }
    return items;
  }

  async function start() {
    const canvas = el("scatter");
    try {
      state.data = await api("/api/points");
    } catch (error) {
      showError(error);
      return;
    }
    fit(el("decoded"), DECODED_BOX);
    state.frame = makeFrame(canvas, state.data.x, state.data.y);
    state.base = drawBase(canvas);
    describe(state.data);
    buildSliders();
    buildClassSelector();
    canvas.addEventListener("pointermove", (event) => setZ(pointerLatent(canvas, event)));
    canvas.addEventListener("click", (event) => {
      const z = pointerLatent(canvas, event);
      if (state.picks.length === 2) state.picks = [];
      state.picks.push(z);
      setZ(z);
      if (state.picks.length === 2) interpolate();
    });
    el("sample").addEventListener("click", sample);
    setZ(state.data.view.mean.slice());
    root.dataset.ready = "true";
  }

  start();
}

// The served page starts itself; the widget imports this file as a module and calls startExplorer
// on its own element (a module has no currentScript).
if (document.currentScript) startExplorer(document.body, httpApi);
