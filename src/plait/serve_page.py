"""The page ``plait serve`` shows at ``/``: a form built in the browser from ``/v1/schema``.

One field per input (a select for a small category or a flag, a textarea for text, a file
picker for an image, a number box, a list box for vectors and sequences), a button that
sends the record to ``/v1/predict``, and each output's prediction with its probabilities
as bars. Self-contained: no external script, style or font. Values from the schema are
put in the page as text, never as markup.
"""

from __future__ import annotations

PAGE_SECURITY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                 "connect-src 'self'; img-src data: blob:; form-action 'none'; base-uri 'none'; "
                 "frame-ancestors 'none'")
"""The Content-Security-Policy the page is served with: it may talk to its own server only."""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>plait model</title>
<style>
  body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 46rem; padding: 0 1rem;
         color: #1d232a; }
  h1 { font-size: 1.4rem; margin-bottom: .2rem; }
  .muted { color: #5b6570; font-size: .9rem; }
  label { display: block; font-weight: 600; margin-top: 1rem; }
  label span { font-weight: 400; color: #5b6570; font-size: .85rem; margin-left: .4rem; }
  input, select, textarea { font: inherit; width: 100%; box-sizing: border-box; padding: .35rem;
                            margin-top: .25rem; }
  textarea { min-height: 4.5rem; }
  button { font: inherit; margin-top: 1.2rem; padding: .5rem 1.4rem; cursor: pointer; }
  #result { margin-top: 1.5rem; }
  .output { border: 1px solid #d5dbe1; border-radius: 6px; padding: .8rem 1rem; margin-bottom: 1rem; }
  .prediction { font-size: 1.25rem; font-weight: 700; }
  .bar { display: grid; grid-template-columns: 10rem 1fr 4.5rem; gap: .5rem; align-items: center;
         margin-top: .3rem; }
  .bar div.track { background: #eef1f4; height: .8rem; border-radius: 3px; }
  .bar div.fill { background: #3b7dd8; height: 100%; border-radius: 3px; }
  .error { color: #b3261e; white-space: pre-wrap; }
  img.preview { max-height: 6rem; margin-top: .4rem; display: block; }
</style>
</head>
<body>
<h1 id="title">plait model</h1>
<div class="muted" id="subtitle">Loading the schema…</div>
<form id="form" autocomplete="off"></form>
<div id="result" aria-live="polite"></div>
<script>
"use strict";
const form = document.getElementById("form");
const result = document.getElementById("result");
let schema = null;
let apiKey = "";

function element(tag, attributes, text) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function headers() {
  const sent = {"Content-Type": "application/json"};
  if (apiKey) sent["X-API-Key"] = apiKey;
  return sent;
}

function showError(message) {
  result.replaceChildren(element("div", {"class": "error", "id": "error"}, message));
}

async function loadSchema() {
  const response = await fetch("v1/schema", {headers: headers()});
  if (response.status === 401) { askForKey(); return; }
  if (!response.ok) { showError("Cannot read the schema: HTTP " + response.status); return; }
  schema = await response.json();
  buildForm();
}

function askForKey() {
  document.getElementById("subtitle").textContent = "This service needs an API key.";
  const input = element("input", {"type": "password", "id": "api-key", "name": "api-key"});
  const button = element("button", {"type": "submit"}, "Use key");
  form.replaceChildren(element("label", {"for": "api-key"}, "API key"), input, button);
  form.onsubmit = (event) => { event.preventDefault(); apiKey = input.value; loadSchema(); };
}

function fieldLabel(input, field) {
  const label = element("label", {"for": "field-" + field}, field);
  const owner = input.fields.length > 1 ? " (" + input.name + ")" : "";
  label.appendChild(element("span", {}, input.type + owner));
  return label;
}

// Each input's schema names its widget; the page knows widgets, not input types.
function control(input, field) {
  const id = "field-" + field;
  const base = {"id": id, "name": field, "data-widget": input.widget, "title": input.accepts};
  const values = input.values || [];
  if (input.widget === "select" && values.length <= 50) {
    const select = element("select", base);
    select.appendChild(element("option", {"value": ""}, "(missing)"));
    for (const value of values) select.appendChild(element("option", {"value": value}, value));
    return select;
  }
  if (input.widget === "select" || input.widget === "text") {
    const hint = input.example || values.slice(0, 5).join(", ");
    return element("input", {...base, "type": "text", "placeholder": hint});
  }
  if (input.widget === "textarea") return element("textarea", {...base, "placeholder": "Some text"});
  if (input.widget === "file") return element("input", {...base, "type": "file", "accept": "image/*"});
  if (input.widget === "number") {
    return element("input", {...base, "type": "number", "step": "any",
                             "placeholder": input.mean !== undefined && input.mean !== null ?
                               "e.g. " + Number(input.mean).toPrecision(4) : ""});
  }
  return element("textarea", {...base, "placeholder": "JSON: " + input.accepts});
}

function buildForm() {
  document.getElementById("title").textContent = "plait model: " + schema.bundle;
  document.getElementById("subtitle").textContent =
    "Fill in a record and press Predict. Empty fields are sent as missing values.";
  form.replaceChildren();
  for (const input of schema.inputs) {
    for (const field of input.fields) {
      form.appendChild(fieldLabel(input, field));
      const node = control(input, field);
      form.appendChild(node);
      if (input.widget === "file") node.addEventListener("change", () => preview(node));
    }
  }
  form.appendChild(element("button", {"type": "submit", "id": "predict"}, "Predict"));
  form.onsubmit = (event) => { event.preventDefault(); predict(); };
}

function preview(node) {
  const old = node.nextElementSibling;
  if (old && old.classList.contains("preview")) old.remove();
  if (!node.files.length) return;
  const image = element("img", {"class": "preview", "alt": "chosen image"});
  image.src = URL.createObjectURL(node.files[0]);
  node.after(image);
}

function readFile(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function fieldValue(node) {
  const widget = node.getAttribute("data-widget");
  if (widget === "file") return node.files.length ? await readFile(node.files[0]) : null;
  const raw = node.value.trim();
  if (raw === "") return null;
  if (widget === "json") return JSON.parse(raw);
  if (widget === "number") return Number(raw);
  return node.value;
}

async function predict() {
  const record = {};
  try {
    for (const node of form.querySelectorAll("[data-widget]")) record[node.name] = await fieldValue(node);
  } catch (error) {
    showError("Cannot read the form: " + error.message);
    return;
  }
  const response = await fetch("v1/predict", {method: "POST", headers: headers(),
                                              body: JSON.stringify([record])});
  const answer = await response.json().catch(() => ({detail: "HTTP " + response.status}));
  if (!response.ok) { showError(answer.detail || "HTTP " + response.status); return; }
  showPrediction(answer.predictions[0]);
}

function showPrediction(row) {
  const parts = [];
  for (const output of schema.outputs) {
    const box = element("div", {"class": "output", "data-output": output.name});
    box.appendChild(element("div", {"class": "muted"}, output.name + " (" + output.type + ")"));
    const value = row[output.name];
    const shown = value === null ? "no prediction (a skipped missing value)" :
      (typeof value === "number" ? value.toPrecision(6) : String(value));
    box.appendChild(element("div", {"class": "prediction"}, shown));
    for (const [label, column] of output.bars || []) box.appendChild(bar(String(label), row[column]));
    parts.push(box);
  }
  result.replaceChildren(...parts);
}

function bar(label, probability) {
  const row = element("div", {"class": "bar probability", "data-label": label});
  row.appendChild(element("div", {"class": "name"}, label));
  const track = element("div", {"class": "track"});
  const fill = element("div", {"class": "fill"});
  fill.style.width = (100 * (probability || 0)).toFixed(1) + "%";
  track.appendChild(fill);
  row.appendChild(track);
  row.appendChild(element("div", {"class": "value"}, probability === null ? "–" : probability.toFixed(3)));
  return row;
}

loadSchema().catch((error) => showError("Cannot reach the service: " + error.message));
</script>
</body>
</html>
"""
