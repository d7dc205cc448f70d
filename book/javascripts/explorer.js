// Generated from the book by `tinytransformer tangle`; edit these chapters instead:
//   book/appendix-browser.md
// The Explorer page (book/explorer.md): the prompt, the next-character bars, the
// attention map, generation.
import {
  PromptError,
  encodePrompt,
  forward,
  generateTokens,
  loadModel,
  nextTokenProbabilities,
  seededRandom,
} from "./tinytransformer.js";

const $ = (id) => document.getElementById(`explorer-${id}`);
// characters that would otherwise be invisible in a label
const SHOWN = { "\n": "⏎", " ": "␣" };
const label = (char) => SHOWN[char] ?? char;
const state = {
  model: null,
  prompt: null,
  ids: [],
  logits: null,
  probabilities: null,
  attnWeights: [],
};
window.tinyExplorer = state;

async function start() {
  const model = await loadModel(new URL("../explorer/manifest.json", import.meta.url));
  const { config, manifest } = model;
  const { step, val_loss } = manifest.checkpoint ?? {};
  $("model").textContent =
    `${config.n_layers} layers, ${config.n_heads} heads, d_model ${config.d_model}, ` +
    `context ${config.max_seq_len} characters, ` +
    `${manifest.parameters.toLocaleString("en")} parameters ` +
    `(${manifest.dtype})` +
    (step ? `, trained ${step} steps, validation loss ${val_loss?.toFixed(3)}` : "");
  $("command").textContent = manifest.command ?? "";
  $("layer").replaceChildren(
    ...[...Array(config.n_layers).keys()].map((l) => new Option(`layer ${l}`, l)),
  );
  $("head").replaceChildren(
    ...[...Array(config.n_heads).keys()].map((h) => new Option(`head ${h}`, h)),
  );
  $("top-k").max = config.vocab_size;
  $("top-k").value = config.vocab_size;
  state.model = model;
  for (const id of ["prompt", "temperature", "top-k", "top-p", "layer", "head"]) {
    $(id).addEventListener("input", update);
  }
  $("prompt").addEventListener("input", stopGenerating);
  $("generate").addEventListener("click", () =>
    generating ? stopGenerating() : generate(),
  );
  update();
  $("root").dataset.state = "ready";
}

function samplingOptions() {
  const temperature = Number($("temperature").value);
  const topK = Number($("top-k").value);
  const topP = Number($("top-p").value);
  $("temperature-value").textContent =
    temperature === 0 ? "0 (greedy)" : temperature.toFixed(2);
  $("top-k-value").textContent =
    topK >= state.model.config.vocab_size ? `${topK} (off)` : topK;
  $("top-p-value").textContent = topP >= 1 ? "1 (off)" : topP.toFixed(2);
  return {
    temperature,
    greedy: temperature === 0,
    topK: topK >= state.model.config.vocab_size ? null : topK,
    topP: topP >= 1 ? null : topP,
  };
}

let pending = false;
function update() {
  // at most one forward pass per frame, however fast the reader types
  if (!pending)
    requestAnimationFrame(() => {
      pending = false;
      render();
    });
  pending = true;
}

function note(kind, text, action) {
  const element = document.createElement("p");
  element.className = `tt-note tt-note-${kind}`;
  element.dataset.note = kind;
  element.textContent = text;
  if (action) element.append(" ", action);
  $("notes").append(element);
}

function render() {
  const { model } = state;
  const prompt = $("prompt").value;
  const options = samplingOptions();
  $("notes").replaceChildren();
  Object.assign(state, {
    prompt,
    ids: [],
    logits: null,
    probabilities: null,
    attnWeights: [],
  });
  let ids;
  try {
    ids = encodePrompt(model.tokenizer, prompt);
  } catch (error) {
    if (!(error instanceof PromptError)) throw error;
    const remove = document.createElement("button");
    remove.textContent = "Remove them";
    remove.addEventListener("click", () => {
      $("prompt").value = [...prompt]
        .filter((char) => model.tokenizer.ids.has(char))
        .join("");
      update();
    });
    note(
      error.kind,
      `${error.message[0].toUpperCase()}${error.message.slice(1)}.`,
      error.kind === "unknown" && remove,
    );
    drawBars([], null, null);
    drawHeatmap([], null);
    return;
  }
  const maxSeqLen = model.config.max_seq_len;
  if (ids.length > maxSeqLen) {
    note(
      "cropped",
      `The prompt has ${ids.length} characters and the model's context holds ` +
        `${maxSeqLen} (max_seq_len): it reads the last ${maxSeqLen}, as generate ` +
        "crops a prompt; the map shows those.",
    );
    ids = ids.slice(-maxSeqLen);
  }
  const { logits, attnWeights } = forward(model, ids);
  const V = model.config.vocab_size;
  const last = logits.slice((ids.length - 1) * V); // the logits of the next character
  Object.assign(state, {
    ids,
    logits: last,
    attnWeights,
    probabilities: nextTokenProbabilities(last, options),
  });
  drawBars(model.tokenizer.chars, nextTokenProbabilities(last), state.probabilities);
  drawHeatmap(model.tokenizer.decode(ids), attnWeights[Number($("layer").value)]);
}

function span(className, textContent = "") {
  return Object.assign(document.createElement("span"), { className, textContent });
}

function drawBars(chars, model, shaped) {
  const top = model
    ? [...model.keys()].sort((a, b) => model[b] - model[a] || a - b).slice(0, 10)
    : [];
  $("bars").replaceChildren(
    ...top.map((id) => {
      const row = document.createElement("div");
      row.className = "tt-bar";
      row.dataset.token = chars[id];
      row.title =
        `${JSON.stringify(chars[id])}: model ${(100 * model[id]).toFixed(2)} %, ` +
        `with these settings ${(100 * shaped[id]).toFixed(2)} %`;
      const [track, raw, drawn] = [
        span("tt-bar-track"),
        span("tt-bar-model"),
        span("tt-bar-shaped"),
      ];
      raw.style.width = `${100 * model[id]}%`;
      drawn.style.width = `${100 * shaped[id]}%`;
      track.append(raw, drawn);
      const value = span("tt-bar-value", `${(100 * shaped[id]).toFixed(1)} %`);
      row.append(span("tt-bar-label", label(chars[id])), track, value);
      return row;
    }),
  );
}

const SVG = "http://www.w3.org/2000/svg";
function svg(name, attributes, text) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes))
    element.setAttribute(key, value);
  if (text !== undefined) element.textContent = text;
  return element;
}

function drawHeatmap(text, layerWeights) {
  const chars = [...text];
  const T = chars.length;
  const head = Number($("head").value);
  const cell = 12,
    margin = 16;
  const map = svg("svg", {
    viewBox: `0 0 ${margin + T * cell} ${margin + T * cell}`,
    class: "tt-heatmap",
    role: "img",
    "aria-label": `attention weights of ${T} positions`,
    "data-rows": T,
    "data-cols": T,
  });
  // large for a short prompt, never wider than the page
  map.style.maxWidth = `${(margin + T * cell) * 2.5}px`;
  chars.forEach((char, i) => {
    const at = margin + i * cell + cell / 2;
    map.append(
      svg("text", { x: margin / 2, y: at, class: "tt-row-label" }, label(char)),
    );
    map.append(
      svg("text", { x: at, y: margin / 2, class: "tt-col-label" }, label(char)),
    );
  });
  for (let i = 0; i < T; i++) {
    for (let j = 0; j <= i; j++) {
      const weight = layerWeights[(head * T + i) * T + j];
      const rect = svg("rect", {
        x: margin + j * cell,
        y: margin + i * cell,
        width: cell,
        height: cell,
        class: "tt-cell",
        "fill-opacity": weight.toFixed(3),
      });
      rect.append(
        svg(
          "title",
          {},
          `${JSON.stringify(chars[i])} (${i}) attends to ${JSON.stringify(chars[j])} ` +
            `(${j}): ${weight.toFixed(3)}`,
        ),
      );
      map.append(rect);
    }
  }
  $("heatmap").replaceChildren(map);
}

let generating = null;

async function generate() {
  let ids;
  try {
    ids = encodePrompt(state.model.tokenizer, $("prompt").value);
  } catch (error) {
    // the note under the prompt already says why
    if (error instanceof PromptError) return;
    throw error;
  }
  const run = (generating = {});
  const random = seededRandom(Number($("seed").value));
  const steps = generateTokens(
    state.model,
    ids,
    Number($("max-new-tokens").value),
    samplingOptions(),
    random,
  );
  $("generate").textContent = "Stop";
  let drawn = performance.now();
  for (const next of steps) {
    if (generating !== run) break;
    $("prompt").value += state.model.tokenizer.chars[next];
    if (performance.now() - drawn > 250) {
      update();
      drawn = performance.now();
    }
    // let the page draw and hear the Stop button
    await new Promise((resolve) => setTimeout(resolve));
  }
  update();
  if (generating === run) stopGenerating();
}

function stopGenerating() {
  generating = null;
  $("generate").textContent = "Generate";
}

start().catch((error) => {
  $("model").textContent = `the model could not be loaded: ${error.message}`;
  $("root").dataset.state = "failed";
});
