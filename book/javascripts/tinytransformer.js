// Generated from the book by `tinytransformer tangle`; edit these chapters instead:
//   book/appendix-browser.md
// The GPT of "Transformer from Scratch" in plain JavaScript: tokenizer, forward pass,
// sampling.
// Activations are Float32Arrays in row-major order: x[t * d + i] is feature i of
// position t.

export const WEB_FORMAT = "tinytransformer-web-1";

/**
 * Load a model written by `tinytransformer export-web`: {config, tokenizer, weights,
 * manifest}.
 */
export async function loadModel(manifestUrl) {
  const manifest = await (await fetchOk(manifestUrl)).json();
  if (manifest.format !== WEB_FORMAT)
    throw new Error(`${manifestUrl} is not written by export-web`);
  const bytes = await (
    await fetchOk(new URL(manifest.weights, manifestUrl))
  ).arrayBuffer();
  const width = manifest.dtype === "float16" ? 2 : 4; // bytes per number
  if (bytes.byteLength !== manifest.parameters * width)
    throw new Error("the weights do not fit their manifest");
  const data = new DataView(bytes);
  const weights = new Map();
  for (const { name, shape, offset } of manifest.tensors) {
    const values = new Float32Array(shape.reduce((a, b) => a * b, 1));
    for (let i = 0; i < values.length; i++) {
      const at = (offset + i) * width;
      values[i] =
        width === 2 ? halfToFloat(data.getUint16(at, true)) : data.getFloat32(at, true);
    }
    weights.set(name, values);
  }
  return {
    config: manifest.config,
    tokenizer: new CharTokenizer(manifest.vocabulary),
    weights,
    manifest,
  };
}

async function fetchOk(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`could not load ${url}: HTTP ${response.status}`);
  return response;
}

/** The number whose IEEE 754 half-precision bits are `bits`. */
export function halfToFloat(bits) {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const fraction = bits & 0x3ff;
  if (exponent === 0) return sign * 2 ** -14 * (fraction / 1024); // subnormal
  if (exponent === 31) return fraction ? NaN : sign * Infinity;
  return sign * 2 ** (exponent - 15) * (1 + fraction / 1024);
}

/** One token per character: chapter 7's CharTokenizer. */
export class CharTokenizer {
  constructor(vocabulary) {
    this.chars = [...vocabulary]; // code points, as Python iterates a str
    this.ids = new Map(this.chars.map((char, id) => [char, id]));
    this.vocabSize = this.chars.length;
  }

  /**
   * The characters of `text` that are not in the vocabulary, each once, in order of
   * appearance.
   */
  unknown(text) {
    return [...new Set([...text].filter((char) => !this.ids.has(char)))];
  }

  encode(text) {
    const [char] = this.unknown(text);
    if (char !== undefined) {
      throw new PromptError(
        "unknown",
        `character ${describeChar(char)} is not in the vocabulary`,
        [char],
      );
    }
    return [...text].map((char) => this.ids.get(char));
  }

  decode(ids) {
    return ids.map((id) => this.chars[id]).join("");
  }
}

/**
 * A prompt the model cannot read; `kind` is "empty" or "unknown", `chars` the unknown
 * characters.
 */
export class PromptError extends Error {
  constructor(kind, message, chars = []) {
    super(message);
    this.kind = kind;
    this.chars = chars;
  }
}

/**
 * `"é" (U+00E9)`: a character, visible even when it is a space or a control character.
 */
export function describeChar(char) {
  const code = char.codePointAt(0).toString(16).toUpperCase().padStart(4, "0");
  return `${JSON.stringify(char)} (U+${code})`;
}

/** The prompt's ids, refused as chapter 10's `encode_prompt` refuses it. */
export function encodePrompt(tokenizer, prompt) {
  if (!prompt) {
    throw new PromptError(
      "empty",
      "the prompt is empty and the char tokenizer has no end-of-text token to " +
        "start from; give a prompt of at least one character",
    );
  }
  const unknown = tokenizer.unknown(prompt);
  if (unknown.length) {
    throw new PromptError(
      "unknown",
      `the prompt has characters that the char tokenizer's vocabulary of ` +
        `${tokenizer.vocabSize} does not contain: ` +
        `${unknown.map(describeChar).join(", ")}; remove or replace them`,
      unknown,
    );
  }
  return tokenizer.encode(prompt);
}

/**
 * nn.Linear: (T, dIn) -> (T, dOut), with `weight` stored (dOut, dIn) as PyTorch stores
 * it.
 */
export function linear(x, weight, bias, dIn, dOut) {
  const T = x.length / dIn;
  const out = new Float32Array(T * dOut);
  const end = dIn - (dIn % 4);
  for (let t = 0; t < T; t++) {
    const row = t * dIn;
    for (let o = 0; o < dOut; o++) {
      const w = o * dIn; // row o of the weight
      let s0 = 0,
        s1 = 0,
        s2 = 0,
        s3 = 0;
      let i = 0;
      for (; i < end; i += 4) {
        s0 += x[row + i] * weight[w + i];
        s1 += x[row + i + 1] * weight[w + i + 1];
        s2 += x[row + i + 2] * weight[w + i + 2];
        s3 += x[row + i + 3] * weight[w + i + 3];
      }
      for (; i < dIn; i++) s0 += x[row + i] * weight[w + i];
      out[t * dOut + o] = (bias ? bias[o] : 0) + s0 + s1 + s2 + s3;
    }
  }
  return out;
}

/**
 * nn.LayerNorm over the last dimension: (x - mean) / sqrt(variance + eps) * weight +
 * bias.
 */
export function layerNorm(x, weight, bias, d, eps) {
  const out = new Float32Array(x.length);
  for (let row = 0; row < x.length; row += d) {
    let mean = 0;
    for (let i = 0; i < d; i++) mean += x[row + i];
    mean /= d;
    let variance = 0; // biased (divided by d), as nn.LayerNorm computes it
    for (let i = 0; i < d; i++) variance += (x[row + i] - mean) ** 2;
    const scale = 1 / Math.sqrt(variance / d + eps);
    for (let i = 0; i < d; i++)
      out[row + i] = (x[row + i] - mean) * scale * weight[i] + (bias ? bias[i] : 0);
  }
  return out;
}

/**
 * The error function, to about 1e-15: Taylor series below |z| = 3, continued fraction
 * above.
 */
export function erf(z) {
  const a = Math.abs(z);
  if (a < 3) {
    let term = z; // (-1)^n z^(2n+1) / n!
    let sum = z;
    for (let n = 1; Math.abs(term) > 1e-17; n++) {
      term *= (-z * z) / n;
      sum += term / (2 * n + 1);
    }
    return (2 / Math.sqrt(Math.PI)) * sum;
  }
  let fraction = a;
  for (let k = 60; k >= 1; k--) fraction = a + k / 2 / fraction;
  return Math.sign(z) * (1 - Math.exp(-a * a) / Math.sqrt(Math.PI) / fraction);
}

/** nn.GELU: exact (approximate "none") or GPT-2's tanh approximation ("tanh"). */
export function gelu(x, approximate) {
  const out = new Float32Array(x.length);
  const c = Math.sqrt(2 / Math.PI);
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    out[i] =
      approximate === "tanh"
        ? 0.5 * v * (1 + Math.tanh(c * (v + 0.044715 * v ** 3)))
        : 0.5 * v * (1 + erf(v / Math.SQRT2));
  }
  return out;
}

/**
 * Causal multi-head attention on qkv (T, 3 * d): the merged heads (T, d) and the
 * weights (H, T, T).
 */
export function attention(qkv, T, nHeads, dHead) {
  const d = nHeads * dHead;
  const heads = new Float32Array(T * d);
  // zero above the diagonal: the causal mask
  const weights = new Float32Array(nHeads * T * T);
  const scores = new Float64Array(T);
  const sum = new Float64Array(dHead);
  for (let h = 0; h < nHeads; h++) {
    // column of head h's query; its key is d further on, its value 2d
    const q = h * dHead;
    for (let i = 0; i < T; i++) {
      let max = -Infinity;
      for (let j = 0; j <= i; j++) {
        let s = 0;
        for (let c = 0; c < dHead; c++)
          s += qkv[i * 3 * d + q + c] * qkv[j * 3 * d + d + q + c];
        scores[j] = s / Math.sqrt(dHead);
        max = Math.max(max, scores[j]);
      }
      let total = 0;
      for (let j = 0; j <= i; j++) {
        scores[j] = Math.exp(scores[j] - max);
        total += scores[j];
      }
      sum.fill(0);
      for (let j = 0; j <= i; j++) {
        const w = (weights[(h * T + i) * T + j] = scores[j] / total);
        for (let c = 0; c < dHead; c++) sum[c] += w * qkv[j * 3 * d + 2 * d + q + c];
      }
      // merge: head h's output goes to columns q .. q + dHead
      heads.set(sum, i * d + q);
    }
  }
  return { heads, weights };
}

function add(x, y) {
  for (let i = 0; i < x.length; i++) x[i] += y[i];
  return x;
}

/**
 * One Pre-LN transformer block (chapter 5) on x (T, d_model): the new x and the
 * attention weights.
 */
export function block(model, layer, x, T) {
  const {
    d_model: d,
    n_heads: nHeads,
    d_ff: dFF,
    layer_norm_eps: eps,
    gelu_approximate,
  } = model.config;
  // null: no such bias
  const w = (name) => model.weights.get(`blocks.${layer}.${name}`) ?? null;
  const qkv = linear(
    layerNorm(x, w("attn_norm.weight"), w("attn_norm.bias"), d, eps),
    w("attn.qkv_proj.weight"),
    w("attn.qkv_proj.bias"),
    d,
    3 * d,
  ); // (T, d) -> (T, 3d)
  const { heads, weights } = attention(qkv, T, nHeads, d / nHeads);
  add(x, linear(heads, w("attn.out_proj.weight"), w("attn.out_proj.bias"), d, d));
  const hidden = gelu(
    linear(
      layerNorm(x, w("mlp_norm.weight"), w("mlp_norm.bias"), d, eps),
      // (T, d) -> (T, d_ff)
      w("mlp.fc_in.weight"),
      w("mlp.fc_in.bias"),
      d,
      dFF,
    ),
    gelu_approximate,
  );
  add(x, linear(hidden, w("mlp.fc_out.weight"), w("mlp.fc_out.bias"), dFF, d));
  return { x, weights };
}

/**
 * GPT.forward for one sequence of token ids: logits (T, V) and each layer's attention
 * weights (H, T, T).
 */
export function forward(model, ids) {
  const {
    d_model: d,
    vocab_size: V,
    max_seq_len: maxSeqLen,
    n_layers: nLayers,
  } = model.config;
  const T = ids.length;
  if (T < 1 || T > maxSeqLen)
    throw new RangeError(`need 1 to ${maxSeqLen} tokens (max_seq_len), got ${T}`);
  // (V, d)
  const tokenEmbedding = model.weights.get("embeddings.token_embedding.weight");
  // (max_seq_len, d)
  const positionEmbedding = model.weights.get("embeddings.position_embedding.weight");
  let x = new Float32Array(T * d);
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < d; i++)
      x[t * d + i] = tokenEmbedding[ids[t] * d + i] + positionEmbedding[t * d + i];
  }
  const attnWeights = [];
  for (let layer = 0; layer < nLayers; layer++) {
    const result = block(model, layer, x, T);
    x = result.x;
    attnWeights.push(result.weights);
  }
  const w = (name) => model.weights.get(name) ?? null;
  x = layerNorm(
    x,
    w("final_norm.weight"),
    w("final_norm.bias"),
    d,
    model.config.layer_norm_eps,
  );
  // (V, d)
  const output = model.config.tie_weights ? tokenEmbedding : w("lm_head.weight");
  return { logits: linear(x, output, null, d, V), attnWeights };
}

/**
 * top_k_filter: keep the topK largest logits (and any tied with the k-th); the others
 * become -Infinity.
 */
export function topKFilter(logits, topK) {
  const sorted = Float64Array.from(logits).sort(); // ascending
  const kthLargest = sorted[sorted.length - Math.min(topK, sorted.length)];
  return Float64Array.from(logits, (z) => (z < kthLargest ? -Infinity : z));
}

/**
 * top_p_filter: keep the smallest set of most likely tokens whose probabilities reach
 * topP.
 */
export function topPFilter(logits, topP) {
  // ascending: the tail first
  const order = [...logits.keys()].sort((a, b) => logits[a] - logits[b] || a - b);
  const probabilities = softmax(order.map((i) => logits[i]));
  const out = Float64Array.from(logits);
  let cumulative = 0;
  // never the last: the most likely token stays
  for (let r = 0; r < order.length - 1; r++) {
    cumulative += probabilities[r];
    if (cumulative <= 1 - topP) out[order[r]] = -Infinity;
  }
  return out;
}

export function softmax(logits) {
  let max = -Infinity;
  for (const z of logits) max = Math.max(max, z);
  const exps = Float64Array.from(logits, (z) => Math.exp(z - max));
  const total = exps.reduce((a, b) => a + b, 0);
  return exps.map((e) => e / total);
}

export function argmax(values) {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

/**
 * The probabilities sample_next_token draws from: {temperature, topK, topP, greedy};
 * null means off.
 */
export function nextTokenProbabilities(
  logits,
  { temperature = 1, topK = null, topP = null, greedy = false } = {},
) {
  if (greedy)
    return Float64Array.from(logits, (_, i) => (i === argmax(logits) ? 1 : 0));
  let max = -Infinity;
  for (const z of logits) max = Math.max(max, z);
  // the largest is 0: no overflow
  let z = Float64Array.from(logits, (v) => (v - max) / temperature);
  if (topK !== null) z = topKFilter(z, topK);
  if (topP !== null) z = topPFilter(z, topP);
  return softmax(z);
}

/**
 * sample_next_token: a token id drawn with `random` (a function returning numbers in
 * [0, 1)).
 */
export function sampleNextToken(logits, options, random) {
  if (options.greedy) return argmax(logits);
  const probabilities = nextTokenProbabilities(logits, options);
  let u = random();
  for (let i = 0; i < probabilities.length; i++) {
    u -= probabilities[i];
    if (u < 0) return i;
  }
  // u landed in the last rounding error: take the surest token
  return argmax(probabilities);
}

/** A seeded generator of numbers in [0, 1): xorshift32 (Marsaglia, 2003). */
export function seededRandom(seed) {
  // scrambled, never 0
  let state = Math.imul((seed >>> 0) ^ 0x9e3779b9, 0x85ebca6b) >>> 0 || 1;
  return () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 2 ** 32;
  };
}

/** generate_tokens without a KV cache: yields each new token id. */
export function* generateTokens(model, ids, maxNewTokens, options, random) {
  const { max_seq_len: maxSeqLen, vocab_size: V } = model.config;
  let context = ids.slice(-maxSeqLen);
  for (let step = 0; step < maxNewTokens; step++) {
    const { logits } = forward(model, context);
    const next = sampleNextToken(
      logits.subarray((context.length - 1) * V),
      options,
      random,
    ); // last position
    yield next;
    context.push(next);
    if (context.length > maxSeqLen)
      context = context.slice(-Math.max(1, Math.floor(maxSeqLen / 2)));
  }
}
