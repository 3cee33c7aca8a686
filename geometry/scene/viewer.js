// layerscan's offline HTML viewer: the scan's particles on a 2D canvas, token labels placed
// without overlap, picking (hover or click) with the picked token's logit lens.
// DATA (set by the page) holds the panels exported by geometry/scene/export.py.
"use strict";
function f32(b64) {
  const s = atob(b64), u = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) u[i] = s.charCodeAt(i);
  return new Float32Array(u.buffer);
}
function i32(b64) { return new Int32Array(f32(b64).buffer); }
function vis(t) { return t.replace(/ /g, "␣").replace(/\n/g, "↵").replace(/\t/g, "⇥") || "∅"; }
function cut(t, n) { return t.length <= n ? t : t.slice(0, n - 1) + "…"; }
function esc(s) { return s.replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;"}[c])); }
function ink(hex) {
  const n = parseInt(hex.slice(1), 16);
  const l = (0.2126 * (n >> 16) + 0.7152 * (n >> 8 & 255) + 0.0722 * (n & 255)) / 255;
  return l > 0.45 ? "#101218" : "#f4f6f8";
}
const P = DATA.panels, NL = P[0].layer_names.length, N = P[0].n_particles;
const TURBO = [[48,18,59],[70,107,227],[40,187,236],[49,242,153],[162,252,60],[237,208,58],[251,128,34],[210,49,5],[122,4,3]];
function cmap(t, m) {
  t = Math.min(1, Math.max(0, t)) * (m.length - 1);
  const i = Math.min(m.length - 2, Math.floor(t)), f = t - i, a = m[i], b = m[i + 1];
  return `rgb(${a[0] + (b[0] - a[0]) * f | 0},${a[1] + (b[1] - a[1]) * f | 0},${a[2] + (b[2] - a[2]) * f | 0})`;
}
// A diff colours each token by its hidden-state divergence (the MP4 frame's colour bar and map)
// and rings its changed tokens (substituted, only in B: appears, only in A: vanishes).
const BAR = DATA.colour_bar || null, RINGS = DATA.ring_colors || {};
const LABEL_LIMIT = 12, MAX_LABELS = 60, GAP = 3;

const panels = P.map((p, pi) => {
  const div = document.createElement("div");
  div.className = "panel";
  div.innerHTML = `<canvas></canvas><div class="head"></div><div class="lens"></div><div class="key dim"></div><div class="tokens"></div>`;
  document.getElementById("row").appendChild(div);
  const pos = f32(p.positions);
  const surf = p.surfaces && p.surfaces.map(s => ({v: f32(s.v), f: i32(s.f)}));
  const tdiv = p.token_divergence ? f32(p.token_divergence) : null, T = p.tokens.length;
  const changed = new Map(p.changed || []);
  const ptok = i32(p.particle_tokens), tcol = p.token_colors;
  const first = pos.subarray(0, N * 3);
  let mx = 0, my = 0;
  for (let i = 0; i < N; i++) { mx += first[3 * i]; my += first[3 * i + 1]; }
  const slot = new Float32Array(N), order = [];
  for (let i = 0; i < N; i++) order.push([first[3 * i] - mx / N + 0.5 * (first[3 * i + 1] - my / N), i]);
  order.sort((a, b) => a[0] - b[0]);
  order.forEach((e, r) => slot[e[1]] = r / (N - 1));
  div.querySelector(".tokens").innerHTML = p.tokens.map((t, i) => {
    const ring = changed.has(i) ? `;outline:2px solid ${RINGS[changed.get(i)]}` : "";
    return `<span class="tok${changed.has(i) ? " diff" : ""}" data-i="${i}" style="background:${tcol[i]};color:${ink(tcol[i])}${ring}">${esc(vis(t))}</span>`;
  }).join("");
  const key = div.querySelector(".key");
  key.textContent = p.colour_key;
  if (BAR) {
    const stops = BAR.palette.map(c => `rgb(${c})`).join(",");
    key.innerHTML = `${esc(p.colour_key)}<br>0 <span class="cbar" style="background:linear-gradient(90deg,${stops})"></span> ${BAR.top} ${esc(BAR.title)}` +
      `<br>rings: <b style="color:${RINGS.changed}">changed</b> · <b style="color:${RINGS.appears}">only in B (appears)</b> · <b style="color:${RINGS.vanishes}">only in A (vanishes)</b>` +
      (pi === P.length - 1 && DATA.onset_key ? `<br>chart: ${esc(DATA.onset_key)}` : "");
  }
  const a = p.attention, c = p.components;
  const att = a && {...a, keys: i32(a.keys), weights: f32(a.weights)};
  const comp = c && {...c, attention: f32(c.attention), mlp: f32(c.mlp), split: f32(c.split)};
  let strip = null;
  if (comp) {
    strip = document.createElement("canvas");
    strip.className = "strip";
    div.appendChild(strip);
  }
  return {p, div, canvas: div.querySelector("canvas"), pos, surf, tdiv, T, changed, slot, ptok, tcol,
          att, comp, strip, arcs: null, labels: [], screen: [], focus: null,
          pinned: p.trace ?? null, head: a ? a.head : null};
});
const controls = document.getElementById("ctl");
function control(html) {
  const label = document.createElement("label");
  label.innerHTML = html;
  controls.appendChild(label);
  return label;
}
const withArcs = panels.some(q => q.att), withStrip = panels.some(q => q.comp);
const arcsBox = withArcs ? control(`<input id="arcs" type="checkbox" checked> arcs`) : null;
const stripBox = withStrip ? control(`<input id="strip" type="checkbox" checked> strip`) : null;
if (withArcs) {
  const a = panels.find(q => q.att).att, heads = document.createElement("select");
  heads.id = "head";
  const names = a.all_heads ? ["mean", ...Array.from({length: a.n_heads}, (_, i) => i)] : ["mean"];
  heads.innerHTML = names.map(n => `<option value="${n}"${n === (a.head ?? "mean") ? " selected" : ""}>${n === "mean" ? "mean of heads" : "head " + n}</option>`).join("");
  heads.onchange = () => { const v = parseInt(heads.value, 10); for (const q of panels) q.head = Number.isInteger(v) ? v : null; };
  controls.appendChild(heads);
}
function checked(box) { return !box || box.querySelector("input").checked !== false; }

let layer = 0, playing = true, az = 0.6, el = 0.38, zoom = 1, last = performance.now();
const slider = document.getElementById("slider");
slider.max = NL - 1;
const mode = document.getElementById("mode");
if (BAR) { mode.innerHTML = "<option>divergence</option>" + mode.innerHTML; mode.value = "divergence"; }
const playButton = document.getElementById("play");
function setPlaying(on) {
  playing = on;
  playButton.textContent = playing ? "pause" : "play";
  if (playing && layer >= NL - 1) layer = 0;
}
playButton.onclick = () => setPlaying(!playing);
slider.oninput = () => { layer = +slider.value; setPlaying(false); };

// --- picking: the particle nearest the pointer names its token ---------------------------
function nearestToken(q, x, y) {
  let best = -1, bestD = 12 * (window.devicePixelRatio || 1);
  for (const [px, py, , i] of q.screen) {
    const d = Math.hypot(px - x, py - y);
    if (d < bestD) { bestD = d; best = i; }
  }
  if (best < 0) return null;
  const lo = Math.floor(layer), hi = Math.min(NL - 1, lo + 1), near = ease(layer - lo) < 0.5 ? lo : hi;
  return q.ptok[near * N + best];
}
let drag = null, moved = false;
for (const q of panels) {
  const at = e => {
    const r = q.canvas.getBoundingClientRect(), dpr = window.devicePixelRatio || 1;
    return [(e.clientX - r.left) * dpr, (e.clientY - r.top) * dpr];
  };
  q.canvas.onmousedown = e => { drag = [e.clientX, e.clientY]; moved = false; };
  q.canvas.onwheel = e => { zoom *= Math.exp(-e.deltaY * 0.001); e.preventDefault(); };
  q.canvas.onmousemove = e => { if (!drag) q.focus = nearestToken(q, ...at(e)); };
  q.canvas.onmouseleave = () => { q.focus = null; };
  q.canvas.onclick = e => { if (!moved) q.pinned = nearestToken(q, ...at(e)); };
}
window.onmouseup = () => drag = null;
window.onmousemove = e => {
  if (!drag) return;
  if (Math.abs(e.clientX - drag[0]) + Math.abs(e.clientY - drag[1]) > 2) moved = true;
  az -= (e.clientX - drag[0]) * 0.01;
  el = Math.max(-1.5, Math.min(1.5, el + (e.clientY - drag[1]) * 0.01));
  drag = [e.clientX, e.clientY];
};
window.onkeydown = e => {
  if (e.key === " ") { playButton.click(); e.preventDefault(); }
  if (e.key === "]") layer = Math.min(NL - 1, Math.floor(layer + 1e-6) + 1);
  if (e.key === "[") layer = Math.max(0, Math.ceil(layer - 1e-6) - 1);
};

function ease(t) { return t * t * (3 - 2 * t); }
// The camera frames the layer on show: its (smoothed) centre and radius, eased between layers.
function framing(q, lo, hi, t) {
  const c = q.p.frame_centres, r = q.p.frame_radii;
  return [[0, 1, 2].map(k => c[lo][k] + (c[hi][k] - c[lo][k]) * t), r[lo] * Math.pow(r[hi] / r[lo], t)];
}
function project(x, y, z, w, h, fr) {
  x = (x - fr[0][0]) / fr[1]; y = (y - fr[0][1]) / fr[1]; z = (z - fr[0][2]) / fr[1];
  const ca = Math.cos(az), sa = Math.sin(az), ce = Math.cos(el), se = Math.sin(el);
  const X = ca * x - sa * y, Y = sa * x + ca * y, Z = z;
  const depth = ce * Y + se * Z, up = ce * Z - se * Y, d = 3.2;
  const s = Math.min(w, h * 1.25) * 0.68 * zoom / (d - depth);
  return [w / 2 + X * s, h * 0.47 - up * s, depth];
}

// --- labels: greedy placement by importance, never overlapping -------------------------------
function placeLabels(g, q, near, w, h, dpr) {
  const n = q.p.tokens.length, sx = new Float64Array(n), sy = new Float64Array(n), cnt = new Int32Array(n);
  const top = new Float64Array(n).fill(0), bot = new Float64Array(n).fill(0);
  for (const [x, y, , i] of q.screen) { const k = q.ptok[near * N + i]; sx[k] += x; sy[k] += y; cnt[k]++; }
  for (let k = 0; k < n; k++) if (cnt[k]) { sx[k] /= cnt[k]; sy[k] /= cnt[k]; }
  for (const [, y, , i] of q.screen) {
    const k = q.ptok[near * N + i], dy = y - sy[k];
    top[k] = Math.min(top[k], dy); bot[k] = Math.max(bot[k], dy);
  }
  const focus = q.focus ?? q.pinned;
  const order = focus === null ? q.p.label_order : [focus, ...q.p.label_order.filter(k => k !== focus)];
  g.font = `bold ${Math.round((n > 16 ? 11 : 12) * dpr)}px system-ui,sans-serif`;
  const taken = [], shown = [], pad = 3 * dpr, lh = Math.round((n > 16 ? 15 : 17) * dpr);
  const areaTop = 110 * dpr, areaBottom = h - 96 * dpr;
  for (const k of order) {
    if (!cnt[k] || shown.length >= MAX_LABELS) continue;
    const text = cut(vis(q.p.tokens[k]), LABEL_LIMIT), lw = g.measureText(text).width + 2 * pad;
    const above = sy[k] + top[k] * 0.8 - GAP * dpr - lh / 2, below = sy[k] + bot[k] * 0.8 + GAP * dpr + lh / 2;
    const spots = [[0, above], [0, below]];
    for (let ring = 0; ring < 4; ring++) {
      const dx = lw / 2 + 8 * dpr + ring * lh, dy = ring * (lh + GAP * dpr);
      spots.push([0, above - dy - lh], [0, below + dy + lh], [dx, sy[k]], [-dx, sy[k]],
                 [dx, above - dy], [-dx, above - dy], [dx, below + dy], [-dx, below + dy]);
    }
    for (let s = 0; s < spots.length; s++) {
      const cx = sx[k] + spots[s][0], cy = spots[s][1];
      const box = [cx - lw / 2, cy - lh / 2, cx + lw / 2, cy + lh / 2];
      if (box[0] < 0 || box[2] > w || box[1] < areaTop || box[3] > areaBottom) continue;
      if (taken.some(b => box[0] < b[2] + GAP && b[0] < box[2] + GAP && box[1] < b[3] + GAP && b[1] < box[3] + GAP)) continue;
      taken.push(box);
      shown.push({token: k, text, box, leader: s >= 2, anchor: [sx[k], sy[k]]});
      break;
    }
  }
  for (const l of shown) {
    if (l.leader) {
      const [ax, ay] = l.anchor, b = l.box;
      g.strokeStyle = "rgba(204,214,230,0.8)"; g.lineWidth = 1.2 * dpr;
      g.beginPath(); g.moveTo(ax, ay);
      g.lineTo(Math.min(Math.max(ax, b[0]), b[2]), Math.min(Math.max(ay, b[1]), b[3])); g.stroke();
    }
  }
  g.textAlign = "center"; g.textBaseline = "middle";
  for (const l of shown) {
    const b = l.box, c = q.tcol[l.token];
    g.fillStyle = "#0e1117"; g.fillRect(b[0] - dpr, b[1] - dpr, b[2] - b[0] + 2 * dpr, b[3] - b[1] + 2 * dpr);
    g.fillStyle = c; g.fillRect(b[0], b[1], b[2] - b[0], b[3] - b[1]);
    if (l.token === focus) { g.strokeStyle = "#eef0f4"; g.lineWidth = 2 * dpr; g.strokeRect(b[0], b[1], b[2] - b[0], b[3] - b[1]); }
    g.fillStyle = ink(c); g.fillText(l.text, (b[0] + b[2]) / 2, (b[1] + b[3]) / 2 + 0.5 * dpr);
  }
  q.labels = shown;
}

// --- attention arcs: the scan's top keys, pruned as geometry/attention_summary.py does -------
// Per query, its keys by weight: itself and (unless `sink`) the first token skipped; the rest
// drawn while fewer than `top` are drawn and the query's drawn mass is below `mass`.
function selectArcs(a, block, head, nVisible, token) {
  const [, C, T, K] = a.shape, column = head === null ? C - 1 : head, base = (block * C + column) * T * K;
  const arcs = [];
  let drawn = 0, sink = 0;
  for (let q = 0; q < nVisible; q++) {
    let rank = 0, before = 0;
    for (let j = 0; j < K; j++) {
      const k = a.keys[base + q * K + j], w = a.weights[base + q * K + j];
      if (q >= 1 && k === a.sink_token) sink += w;
      if (k < 0 || k >= nVisible || k === q || (!a.sink && k === a.sink_token)) continue;
      if (token !== null && q !== token && k !== token) continue;
      if (rank < a.top && before < a.mass) { arcs.push([q, k, w]); drawn += w; }
      rank++; before += w;
    }
  }
  return {arcs, coverage: drawn / Math.max(nVisible, 1), sinkShare: sink / Math.max(nVisible - 1, 1)};
}
// A quadratic Bézier from a to b, bowed sideways from the vertical (attention_arcs.arc_points).
function arcPath(a, b, lift) {
  const ch = [0, 1, 2].map(k => b[k] - a[k]), len = Math.hypot(...ch) || 1e-9, u = ch.map(v => v / len);
  let side = [-u[2] * u[0], -u[2] * u[1], 1 - u[2] * u[2]];
  let n = Math.hypot(...side);
  if (n < 1e-6) { side = [1, 0, 0]; n = 1; }
  const ctl = [0, 1, 2].map(k => (a[k] + b[k]) / 2 + lift * len * side[k] / n), out = [];
  for (let i = 0; i <= 16; i++) {
    const t = i / 16;
    out.push([0, 1, 2].map(k => (1 - t) ** 2 * a[k] + 2 * t * (1 - t) * ctl[k] + t * t * b[k]));
  }
  return out;
}
function drawArcs(g, q, places, near, w, h, fr, focus) {
  const a = q.att, n = q.p.tokens.length;
  if (!a || !checked(arcsBox) || near < 1) { q.arcs = null; return ""; }
  const sel = selectArcs(a, near - 1, a.all_heads ? q.head : null, n, focus);
  q.arcs = sel;
  const scale = h / 720, [r, gg, b] = a.color;
  for (const [qi, ki, wt] of sel.arcs) {
    const bin = a.width_bins.filter(([low]) => wt >= low).pop();
    g.strokeStyle = `rgba(${r},${gg},${b},${(0.45 + 0.55 * Math.min(1, wt / 0.5)).toFixed(3)})`;
    g.lineWidth = bin[1] * scale;
    g.beginPath();
    arcPath(places[qi], places[ki], a.lift).forEach((p, i) => {
      const s = project(p[0], p[1], p[2], w, h, fr);
      i ? g.lineTo(s[0], s[1]) : g.moveTo(s[0], s[1]);
    });
    g.stroke();
  }
  if (!a.sink && n > 1) {
    let radius = 0;  // the shown tokens' spread sizes the halo, as in the MP4
    for (let k = 0; k < 3; k++) {
      const v = places.map(p => p[k]);
      radius = Math.max(radius, (Math.max(...v) - Math.min(...v)) / 2);
    }
    const c = places[a.sink_token], rad = (radius || 1) * (0.03 + 0.12 * Math.sqrt(sel.sinkShare));
    const s0 = project(c[0], c[1], c[2], w, h, fr), s1 = project(c[0], c[1], c[2] + rad, w, h, fr);
    g.globalAlpha = 0.35; g.fillStyle = a.sink_color;
    g.beginPath(); g.arc(s0[0], s0[1], Math.max(3, Math.hypot(s1[0] - s0[0], s1[1] - s0[1])), 0, 2 * Math.PI); g.fill();
    g.globalAlpha = 1;
  }
  const head = a.all_heads && q.head !== null ? `head ${q.head} (${a.entropy[near - 1][q.head].toFixed(1)} bits)` : `mean of ${a.n_heads} heads`;
  const what = focus === null ? "" : ` from and to “${esc(cut(vis(q.p.tokens[focus]), 16))}”`;
  const sink = a.sink ? "" : ` · sink “${esc(cut(vis(q.p.tokens[a.sink_token]), 12))}” holds ${(100 * sel.sinkShare).toFixed(0)}% (halo)`;
  return `attention of block ${near} · ${head}${what}: arcs show ${(100 * sel.coverage).toFixed(0)}% of attention ` +
    `(top ${a.top}, to ${(100 * a.mass).toFixed(0)}% per query)${sink}`;
}
// The traced (picked) token's path through the layers up to the one on show.
function drawTrace(g, q, token, layerAt, w, h, fr) {
  const pts = [];
  for (let l = 0; l <= Math.ceil(layerAt); l++) {
    const P = q.pos.subarray(l * N * 3, (l + 1) * N * 3), c = [0, 0, 0];
    let m = 0;
    for (let i = 0; i < N; i++) if (q.ptok[l * N + i] === token) { c[0] += P[3 * i]; c[1] += P[3 * i + 1]; c[2] += P[3 * i + 2]; m++; }
    if (m) pts.push(c.map(v => v / m));
  }
  if (pts.length > 1 && layerAt < pts.length - 1) {  // the head of the path moves with layer-time
    const t = layerAt - Math.floor(layerAt), a = pts[pts.length - 2], b = pts[pts.length - 1];
    pts[pts.length - 1] = a.map((v, k) => v + (b[k] - v) * t);
  }
  g.strokeStyle = "#ffc740"; g.lineWidth = 3 * h / 720;
  g.beginPath();
  pts.forEach((p, i) => { const s = project(p[0], p[1], p[2], w, h, fr); i ? g.lineTo(s[0], s[1]) : g.moveTo(s[0], s[1]); });
  g.stroke();
  q.tracePoints = pts.length;
}
// --- the component strip: one row per block, the token's attention and MLP writes ----------
function drawStrip(q, token, near) {
  const c = q.comp, cv = q.strip, on = checked(stripBox);
  cv.style.display = on ? "block" : "none";
  if (!on) { q.stripToken = null; return; }
  const dpr = window.devicePixelRatio || 1, w = cv.clientWidth * dpr, h = cv.clientHeight * dpr;
  if (cv.width !== w || cv.height !== h) { cv.width = w; cv.height = h; }
  const g = cv.getContext("2d"), L = c.n_layers, T = c.n_tokens, font = Math.round(11 * dpr);
  token = Math.max(0, Math.min(T - 1, token));
  q.stripToken = token;
  g.fillStyle = "rgba(51,61,79,0.6)"; g.fillRect(0, 0, w, h);
  g.font = `${font}px system-ui,sans-serif`; g.textBaseline = "top"; g.textAlign = "left";
  const kind = token >= c.n_prompt ? "generated" : "prompt", pad = 6 * dpr, line = 1.4 * font;
  g.fillStyle = "#eef0f4";
  g.fillText(`${token === q.pinned ? "traced" : "token"} #${token} “${cut(vis(q.p.tokens[token]), 14)}” (${kind})`, pad, pad);
  let prompt = 0, generated = 0;
  for (let l = 0; l < L; l++) { prompt += c.split[(l * T + token) * 3] / L; generated += c.split[(l * T + token) * 3 + 1] / L; }
  const notes = [];
  for (const [t, col] of [[c.units, "#8c93a1"], ["attends: grey prompt, green generated, pink itself (mean over heads)", "#8c93a1"],
                          [c.kv[token], "#eef0f4"], [`attends prompt ${(100 * prompt).toFixed(0)}% · generated ${(100 * generated).toFixed(0)}%`, "#eef0f4"]]) {
    let row = "";
    for (const word of t.split(" ")) {  // wrapped to the strip's width
      if (row && g.measureText(row + " " + word).width > w - 2 * pad) { notes.push([row, col]); row = word; } else row = row ? row + " " + word : word;
    }
    notes.push([row, col]);
  }
  const top = pad + 2.4 * line, bottom = h - 1.5 * pad - notes.length * line, rowH = (bottom - top) / L;
  const labelW = 0.14 * w, cols = [[labelW, 0.47 * w], [0.50 * w, 0.80 * w], [0.84 * w, w - pad]];
  g.textAlign = "center";
  [["attention", c.colors.attention], ["MLP", c.colors.mlp], ["attends", "#8c93a1"]].forEach(([t, col], i) => {
    g.fillStyle = col; g.fillText(t, (cols[i][0] + cols[i][1]) / 2, top - 1.2 * line);
  });
  const y = l => bottom - (l + 1) * rowH;  // block l+1's row top; block 1 at the bottom
  if (near >= 1) { g.fillStyle = "rgba(255,199,64,0.25)"; g.fillRect(0, y(near - 1), w, rowH); }
  const every = Math.max(1, Math.ceil(L / 10));
  g.textAlign = "right"; g.textBaseline = "middle"; g.font = `${Math.round(9 * dpr)}px system-ui,sans-serif`;
  for (let l = 0; l < L; l++) {
    const y0 = y(l) + 0.12 * rowH, bh = 0.76 * rowH;
    [[c.attention, c.colors.attention, cols[0]], [c.mlp, c.colors.mlp, cols[1]]].forEach(([v, col, [x0, x1]]) => {
      const value = v[l * T + token], frac = Math.min(1, value / c.scale);
      g.fillStyle = col; g.fillRect(x0, y0, (x1 - x0) * frac, bh);
      if (value > c.scale) { g.fillStyle = "#eef0f4"; g.fillRect(x1 - 2 * dpr, y0, 2 * dpr, bh); }
    });
    let x = cols[2][0];
    for (let part = 0; part < 3; part++) {
      const dx = (cols[2][1] - cols[2][0]) * c.split[(l * T + token) * 3 + part];
      g.fillStyle = c.colors.split[part]; g.fillRect(x, y0, dx, bh); x += dx;
    }
    if ((l + 1) % every === 0 || l === 0 || l === L - 1) { g.fillStyle = "#8c93a1"; g.fillText(String(l + 1), labelW - 3 * dpr, y0 + bh / 2); }
  }
  g.font = `${font}px system-ui,sans-serif`; g.textAlign = "left"; g.textBaseline = "top";
  notes.forEach(([t, col], i) => { g.fillStyle = col; g.fillText(t, pad, bottom + pad + i * line); });
}
// A ring around each changed token's particles, in its kind's colour.
function rings(g, q, near, dpr) {
  const sx = new Map(), sy = new Map(), cnt = new Map();
  for (const [x, y, , i] of q.screen) {
    const k = q.ptok[near * N + i];
    if (!q.changed.has(k)) continue;
    sx.set(k, (sx.get(k) || 0) + x); sy.set(k, (sy.get(k) || 0) + y); cnt.set(k, (cnt.get(k) || 0) + 1);
  }
  g.lineWidth = 2.5 * dpr;
  for (const [k, n] of cnt) {
    g.strokeStyle = RINGS[q.changed.get(k)] || "#ffffff";
    g.beginPath(); g.arc(sx.get(k) / n, sy.get(k) / n, 11 * dpr * Math.sqrt(zoom), 0, 2 * Math.PI); g.stroke();
  }
}

function draw(q) {
  const c = q.canvas, dpr = window.devicePixelRatio || 1, h = c.clientHeight * dpr;
  let w = c.clientWidth * dpr;
  if (c.width !== w || c.height !== h) { c.width = w; c.height = h; }
  const g = c.getContext("2d");
  g.fillStyle = "#0e1117"; g.fillRect(0, 0, w, h);
  const lo = Math.floor(layer), hi = Math.min(NL - 1, lo + 1), t = ease(layer - lo), near = t < 0.5 ? lo : hi;
  const fr = framing(q, lo, hi, t);
  if (q.strip && checked(stripBox)) w = Math.round(w * 0.76);  // the cloud keeps left of the strip
  if (q.surf && document.getElementById("surf").checked) {
    const s = q.surf[near];
    g.fillStyle = "rgba(95,179,217,0.07)";
    for (let k = 0; k < s.f.length; k += 3) {
      g.beginPath();
      for (let j = 0; j < 3; j++) {
        const v = s.f[k + j] * 3, r = project(s.v[v], s.v[v + 1], s.v[v + 2], w, h, fr);
        j ? g.lineTo(r[0], r[1]) : g.moveTo(r[0], r[1]);
      }
      g.fill();
    }
  }
  const A = q.pos.subarray(lo * N * 3, (lo + 1) * N * 3), B = q.pos.subarray(hi * N * 3, (hi + 1) * N * 3), pts = [];
  const nt = q.p.tokens.length, places = Array.from({length: nt}, () => [0, 0, 0]), count = new Int32Array(nt);
  for (let i = 0; i < N; i++) {
    const x = A[3 * i] + (B[3 * i] - A[3 * i]) * t, y = A[3 * i + 1] + (B[3 * i + 1] - A[3 * i + 1]) * t;
    const z = A[3 * i + 2] + (B[3 * i + 2] - A[3 * i + 2]) * t, k = q.ptok[near * N + i];
    pts.push([...project(x, y, z, w, h, fr), i]);
    places[k][0] += x; places[k][1] += y; places[k][2] += z; count[k]++;
  }
  places.forEach((p, k) => { if (count[k]) for (let j = 0; j < 3; j++) p[j] /= count[k]; });
  pts.sort((a, b) => a[2] - b[2]);
  q.screen = pts;
  const r = Math.max(1.5, 2.6 * dpr * zoom), focus = q.focus ?? q.pinned;
  for (const [x, y, , i] of pts) {
    const k = q.ptok[near * N + i];
    g.fillStyle = mode.value === "token" ? q.tcol[k]
      : mode.value === "divergence" && q.tdiv ? cmap(q.tdiv[near * q.T + k], BAR.palette) : cmap(q.slot[i], TURBO);
    const big = focus !== null && k === focus ? 1.6 : 1;
    g.fillRect(x - r * big, y - r * big, 2 * r * big, 2 * r * big);
  }
  const arcsLine = drawArcs(g, q, places, near, w, h, fr, focus);
  if (q.pinned !== null) drawTrace(g, q, q.pinned, layer, w, h, fr);
  if (document.getElementById("labels").checked) placeLabels(g, q, near, w, h, dpr); else q.labels = [];
  if (q.comp) drawStrip(q, focus ?? q.p.tokens.length - 1, near);
  if (q.changed.size) rings(g, q, near, dpr);  // over the labels: a ring is never hidden
  const m = q.p.metrics, lensTok = focus ?? q.p.tokens.length - 1, base = esc(q.p.baseline_name || "PCA-3");
  const pick = focus === null ? "" : `<br><span class="pick">token ${focus} “${esc(vis(q.p.tokens[focus]))}”, layer ${near}</span>`;
  q.div.querySelector(".head").innerHTML = `<b>layer ${near} / ${NL - 1}</b><br><span class="dim">${esc(q.p.layer_names[near])} · ${esc(DATA.model_id)}<br>` +
    `autoencoder R² ${m.reconstruction_r2[near].toFixed(2)} · token trust ${m.token_trust[near].toFixed(2)} (${base} ${m.baseline_trust[near].toFixed(2)}) · ` +
    `distance corr. ${m.distance_correlation[near].toFixed(2)} (${base} ${m.baseline_correlation[near].toFixed(2)})</span>` +
    `<br><span class="dim small caption">${esc(q.p.caption)}</span>` +
    (q.p.warning ? `<br><span class="warn">${esc(q.p.warning)}</span>` : "") +
    (arcsLine ? `<br><span class="small arcs">${arcsLine}</span>` : "") + pick;
  const lens = q.p.lens && q.p.lens[near][lensTok];
  const lensDiv = q.div.querySelector(".lens");
  lensDiv.innerHTML = !q.p.lens ? "" : !lens || !lens.length
    ? `<span class="dim">no logit lens for “${esc(vis(q.p.tokens[lensTok]))}”</span>`
    : `<span class="dim">logit lens after “${esc(cut(vis(q.p.tokens[lensTok]), 14))}”</span><br>` +
      lens.map(([tok, p]) => `${esc(vis(tok))} ${(100 * p).toFixed(0)}%<span class="bar" style="width:${(p * 110) | 0}px"></span>`).join("<br>");
  for (const chip of q.div.querySelectorAll(".tok")) chip.classList.toggle("focus", +chip.dataset.i === focus);
  document.getElementById("lname").textContent = q.p.layer_names[near];
}
function chart() {
  const c = document.getElementById("chart"), d = DATA.divergence;
  if (!d) { c.style.display = "none"; return; }
  const w = c.width = c.clientWidth, h = c.height = c.clientHeight, g = c.getContext("2d");
  // a zero-based axis, as the frame's chart: the threshold line and the onsets in orange
  const lo = 0, hi = Math.max(...d, DATA.threshold || 0) || 1, Y = v => h - 2 - (v - lo) / (hi - lo) * (h - 4);
  g.strokeStyle = "#ff9e1a";
  if (DATA.threshold) { g.beginPath(); g.moveTo(0, Y(DATA.threshold)); g.lineTo(w, Y(DATA.threshold)); g.stroke(); }
  for (const l of DATA.onsets || []) { const x = l / (d.length - 1) * w; g.beginPath(); g.moveTo(x, 0); g.lineTo(x, h); g.stroke(); }
  g.strokeStyle = "#eef0f4"; g.beginPath();
  d.forEach((v, i) => { const x = i / (d.length - 1) * w, y = Y(v); i ? g.lineTo(x, y) : g.moveTo(x, y); });
  g.stroke();
  g.strokeStyle = "#ffc740"; g.beginPath(); g.moveTo(layer / (NL - 1) * w, 0); g.lineTo(layer / (NL - 1) * w, h); g.stroke();
}
function frame(now) {
  const dt = Math.max(0, now - last) / 1000;  // the first frame may come before `last`
  last = now;
  if (playing) { layer += dt * 3; if (layer >= NL - 1) { layer = NL - 1; setPlaying(false); } }
  slider.value = layer;
  panels.forEach(draw);
  chart();
  requestAnimationFrame(frame);
}
// For tests and scripts: the shown labels, and the layer / pick controls.
window.layerscan = {
  panels,
  show(l) { layer = Math.max(0, Math.min(NL - 1, l)); setPlaying(false); panels.forEach(draw); },
  pick(panel, token) { panels[panel].pinned = token; panels.forEach(draw); },
  arcs(panel, block, head, token) { const q = panels[panel]; return selectArcs(q.att, block, head, q.p.tokens.length, token); },
};
requestAnimationFrame(frame);
