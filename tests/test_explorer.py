"""The Explorer page in headless Chromium: the JavaScript model equals PyTorch's (appendix "The model in your browser").

The page is opened once for the module, from the site ``tests/conftest.py`` builds and serves; each test
types its prompt and sets the sliders it needs, and fails on any console error, failed request or request
that leaves the site. Without Chromium the tests skip, with the instruction, as the site test does.
"""

import json
import math
from pathlib import Path

import pytest
import torch
from torch import Tensor

from tinytransformer.attention import causal_mask
from tinytransformer.checkpoint import load_model
from tinytransformer.cli import main
from tinytransformer.export import load_web_export
from tinytransformer.generation import (
    SamplingOptions,
    encode_prompt,
    top_k_filter,
    top_p_filter,
)
from tinytransformer.model import GPT

from .test_export import write_checkpoint

ROOT = Path(__file__).resolve().parents[1]
LOGIT_TOLERANCE = 1e-4  # float32 arithmetic in both, in another order; measured: a few 1e-6
PROMPTS = [
    "ROMEO:",
    "a",
    "\n",
    "First Citizen:\nBefore we proceed any further, hear me speak.",
    "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer",  # longer than 64
]
SHOWN = {"\n": "⏎", " ": "␣"}  # how the page labels invisible characters

# Everything a test looks at, read from the page in one round trip.
READ_STATE = """() => {
    const s = window.tinyExplorer;
    const map = document.querySelector("#explorer-heatmap svg");
    return {
        prompt: s.prompt, ids: s.ids,
        logits: s.logits && Array.from(s.logits), probabilities: s.probabilities && Array.from(s.probabilities),
        notes: [...document.querySelectorAll("#explorer-notes [data-note]")]
            .map((n) => [n.dataset.note, n.textContent]),
        bars: [...document.querySelectorAll(".tt-bar")].map((b) => b.dataset.token),
        shaped: [...document.querySelectorAll(".tt-bar-shaped")].map((b) => parseFloat(b.style.width) / 100),
        heatmap: map && {rows: Number(map.dataset.rows), cols: Number(map.dataset.cols),
            rowLabels: [...map.querySelectorAll(".tt-row-label")].map((t) => t.textContent),
            colLabels: [...map.querySelectorAll(".tt-col-label")].map((t) => t.textContent),
            cells: [...map.querySelectorAll(".tt-cell")].map((r) => Number(r.getAttribute("fill-opacity")))},
    };
}"""

# The controls back at the page's defaults: temperature 1, no filter, layer 0, head 0.
RESET = """() => {
    const set = (id, value) => { const e = document.getElementById(id); e.value = value;
        e.dispatchEvent(new Event("input")); };
    set("explorer-temperature", 1); set("explorer-top-k", window.tinyExplorer.model.config.vocab_size);
    set("explorer-top-p", 1); set("explorer-layer", 0); set("explorer-head", 0);
    set("explorer-seed", 0); set("explorer-max-new-tokens", 200);
}"""

pytestmark = pytest.mark.xdist_group("site")  # shares the built site with test_site.py


@pytest.fixture(scope="module")
def exported() -> GPT:
    """The committed export, in PyTorch: what the page must compute."""
    return load_web_export(ROOT / "book" / "explorer")[0]


@pytest.fixture(scope="module")
def opened(browser, base_url):
    """The Explorer page with its model loaded, and the problems it reports."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    context.on("request", lambda request: request.url.startswith(("http:", "https:", "ws:", "wss:"))
               and not request.url.startswith(base_url) and problems.append(f"left the site: {request.url}"))
    page.on("console", lambda message: message.type == "error" and problems.append(f"console error: {message.text}"))
    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    page.on("requestfailed", lambda request: problems.append(f"request failed: {request.url} ({request.failure})"))
    page.on("response", lambda response: response.status >= 400
            and problems.append(f"HTTP {response.status}: {response.url}"))
    page.goto(base_url + "explorer/")
    page.wait_for_selector("#explorer-root[data-state=ready]", timeout=30_000)
    yield page, problems
    context.close()


@pytest.fixture
def page(opened):
    """The page, its controls reset; the test fails if the page reported a problem meanwhile."""
    page, problems = opened
    page.evaluate(RESET)
    yield page
    assert not problems, problems


def show(page, prompt: str) -> dict:
    """Type ``prompt`` into the page, wait until it has drawn it, and read what it shows."""
    page.fill("#explorer-prompt", prompt)
    page.wait_for_function("(p) => window.tinyExplorer.prompt === p", arg=prompt)
    return page.evaluate(READ_STATE)


def set_control(page, name: str, value) -> dict:
    """Move a slider or choose a layer or head as a reader does; wait until the page has redrawn, and read it."""
    page.evaluate("""([id, value]) => { const e = document.getElementById(id); e.value = value;
        window.tinyExplorer.prompt = null; e.dispatchEvent(new Event("input")); }""", [f"explorer-{name}", value])
    page.wait_for_function("() => window.tinyExplorer.prompt !== null")
    return page.evaluate(READ_STATE)


def run_in_page(page, body: str, arg=None):
    """Run ``body`` in the page with the model's module imported as ``tt``; returns what it returns."""
    return page.evaluate(f"""async (arg) => {{
        const tt = await import(new URL("../javascripts/tinytransformer.js", location.href));
        {body}
    }}""", arg)


def attention_weights(model: GPT, ids: Tensor) -> list[Tensor]:
    """Each layer's attention weights (H, T, T) for one sequence, recomputed as ``GPT.forward`` runs."""
    x = model.embeddings(ids)  # (1, T, d_model)
    mask, weights = causal_mask(ids.shape[1]), []
    for block in model.blocks:
        attended, layer_weights = block.attn(block.attn_norm(x), mask, need_weights=True)
        weights.append(layer_weights[0])
        x = x + attended
        x = x + block.mlp(block.mlp_norm(x))
    return weights


@torch.no_grad()
def test_page_logits_equal_pytorchs_for_the_committed_weights(page, exported):
    tokenizer = load_web_export(ROOT / "book" / "explorer")[1]
    largest = 0.0
    for prompt in PROMPTS:
        shown = show(page, prompt)
        ids = tokenizer.encode(prompt)[-exported.config.max_seq_len :]  # cropped as generate_tokens crops
        assert shown["ids"] == ids
        expected = exported(torch.tensor([ids]))[0, -1]  # (V,)
        difference = (torch.tensor(shown["logits"]) - expected).abs().max().item()
        largest = max(largest, difference)
        assert difference < LOGIT_TOLERANCE, (prompt, difference)
        assert torch.tensor(shown["logits"]).argmax() == expected.argmax()
        top10 = expected.topk(10).indices.tolist()
        assert shown["bars"] == [tokenizer.chars[i] for i in top10]
    print(f"largest |Δlogit| over {len(PROMPTS)} prompts: {largest:.2e}")


@torch.no_grad()
def test_every_position_and_every_attention_weight_match_pytorch(page, exported):
    tokenizer = load_web_export(ROOT / "book" / "explorer")[1]
    text = "KING RICHARD III:\nNow is the winter of our discontent\nMade glorious summer"[:64]
    ids = tokenizer.encode(text)
    assert len(ids) == exported.config.max_seq_len  # the whole context
    result = run_in_page(page, """const {logits, attnWeights} = tt.forward(window.tinyExplorer.model, arg);
        return {logits: Array.from(logits), attnWeights: attnWeights.map((w) => Array.from(w))};""", ids)
    expected = exported(torch.tensor([ids]))[0]  # (T, V)
    logits = torch.tensor(result["logits"]).view(expected.shape)
    assert (logits - expected).abs().max() < LOGIT_TOLERANCE
    assert torch.equal(logits.argmax(dim=-1), expected.argmax(dim=-1))
    for layer, weights in enumerate(attention_weights(exported, torch.tensor([ids]))):
        page_weights = torch.tensor(result["attnWeights"][layer]).view(weights.shape)
        assert (page_weights - weights).abs().max() < 1e-5, layer


def test_erf_equals_pythons_on_both_sides_of_the_switch(page):
    points = [x / 8 for x in range(-48, 49)] + [2.999999, 3.0, 3.000001, -3.0, 4.5, 6.0, 27.0, 1e-12, 0.0]
    values = run_in_page(page, "return arg.map(tt.erf);", points)
    assert max(abs(value - math.erf(x)) for value, x in zip(values, points)) < 1e-13


def test_the_tokenizer_gives_pythons_ids_and_names_the_same_unknown_characters(page):
    tokenizer = load_web_export(ROOT / "book" / "explorer")[1]
    text = tokenizer.chars + "Thou art more lovely and more temperate:\nRough winds do shake the darling buds"
    assert run_in_page(page, "return window.tinyExplorer.model.tokenizer.encode(arg);", text) == tokenizer.encode(text)
    for prompt in ("café 1 ☃ 😀 done", "\t tab", "ok"):
        unknown = [char for char in dict.fromkeys(prompt) if char not in tokenizer.ids]
        assert run_in_page(page, "return window.tinyExplorer.model.tokenizer.unknown(arg);", prompt) == unknown
        if unknown:  # Python refuses the prompt, naming each of them by code point; so does the page
            with pytest.raises(ValueError) as python_error:
                encode_prompt(tokenizer, prompt)
            page_error = run_in_page(page, """try { tt.encodePrompt(window.tinyExplorer.model.tokenizer, arg); }
                catch (error) { return error.message; }""", prompt)
            codes = [f"U+{ord(char):04X}" for char in unknown]
            assert all(code in str(python_error.value) and code in page_error for code in codes)


def test_unknown_characters_are_named_on_the_page_and_can_be_removed(page):
    shown = show(page, "Hello é world 2024")
    [(kind, text)] = shown["notes"]
    assert kind == "unknown" and all(code in text for code in ("U+00E9", "U+0032", "U+0030", "U+0034"))
    assert shown["bars"] == [] and shown["heatmap"]["rows"] == 0 and shown["logits"] is None
    page.click("#explorer-notes button")
    page.wait_for_function("() => window.tinyExplorer.prompt === 'Hello  world '")
    shown = page.evaluate(READ_STATE)
    assert shown["notes"] == [] and len(shown["bars"]) == 10 and shown["heatmap"]["rows"] == 13


def test_an_empty_prompt_is_refused_with_the_reason(page):
    shown = show(page, "")
    [(kind, text)] = shown["notes"]
    assert kind == "empty" and "no end-of-text token" in text and shown["bars"] == []
    page.click("#explorer-generate")  # nothing to continue: nothing happens
    assert page.input_value("#explorer-prompt") == "" and page.inner_text("#explorer-generate") == "Generate"


def test_a_long_prompt_is_cropped_as_python_crops_it_and_the_page_says_so(page, exported):
    tokenizer = load_web_export(ROOT / "book" / "explorer")[1]
    prompt = PROMPTS[-1]
    shown = show(page, prompt)
    [(kind, text)] = shown["notes"]
    assert kind == "cropped" and f"has {len(prompt)} characters" in text and "the last 64" in text
    assert shown["ids"] == tokenizer.encode(prompt)[-64:]
    assert shown["heatmap"]["rows"] == shown["heatmap"]["cols"] == 64
    assert shown["heatmap"]["colLabels"] == [SHOWN.get(char, char) for char in prompt[-64:]]


@torch.no_grad()
def test_the_heatmap_has_the_prompts_length_on_both_axes_and_pytorchs_weights(page, exported):
    tokenizer = load_web_export(ROOT / "book" / "explorer")[1]
    prompt = "ROMEO:\nBut soft"
    show(page, prompt)
    set_control(page, "layer", 3)
    shown = set_control(page, "head", 2)
    heatmap = shown["heatmap"]
    labels = [SHOWN.get(char, char) for char in prompt]
    assert heatmap["rows"] == heatmap["cols"] == len(prompt)
    assert heatmap["rowLabels"] == heatmap["colLabels"] == labels
    weights = attention_weights(exported, torch.tensor([tokenizer.encode(prompt)]))[3][2]  # layer 3, head 2
    below_diagonal = weights[torch.ones_like(weights, dtype=torch.bool).tril()]  # row by row, as drawn
    assert torch.allclose(torch.tensor(heatmap["cells"]), below_diagonal, atol=6e-4)  # drawn with 3 decimals


def test_sampling_filters_keep_the_same_sets_as_python(page):
    generator = torch.Generator().manual_seed(0)
    rows = [torch.randn(65, generator=generator) * scale for scale in (0.5, 2.0, 6.0)]
    rows.append(torch.tensor([1.0, 3.0, 2.0, 2.0, 0.0]))  # a tie for second place
    cases = [(k, None) for k in (1, 2, 3, 10, 65, 100)] + [(None, p) for p in (0.05, 0.3, 0.6, 0.9, 1.0)]
    cases += [(5, 0.5), (20, 0.9)]
    for row in rows:
        for top_k, top_p in cases:
            expected = row.unsqueeze(0)
            if top_k is not None:
                expected = top_k_filter(expected, top_k)
            if top_p is not None:
                expected = top_p_filter(expected, top_p)
            kept = run_in_page(page, """let z = Float64Array.from(arg.row);
                if (arg.topK !== null) z = tt.topKFilter(z, arg.topK);
                if (arg.topP !== null) z = tt.topPFilter(z, arg.topP);
                return Array.from(z, Number.isFinite);""", {"row": row.tolist(), "topK": top_k, "topP": top_p})
            assert kept == expected[0].isfinite().tolist(), (row, top_k, top_p)


@torch.no_grad()
def test_the_sliders_reshape_the_bars_as_sample_next_token_would(page):
    shown = show(page, "ROMEO:\nBut soft")
    logits = torch.tensor(shown["logits"])
    for temperature, top_k, top_p in ((0.5, 3, 1.0), (1.5, 65, 0.6), (0.8, 10, 0.9)):
        set_control(page, "temperature", temperature)
        set_control(page, "top-k", top_k)
        shown = set_control(page, "top-p", top_p)
        expected = ((logits - logits.max()) / temperature).unsqueeze(0)  # sample_next_token, step by step
        expected = top_k_filter(expected, top_k) if top_k < 65 else expected
        expected = top_p_filter(expected, top_p) if top_p < 1 else expected
        expected = torch.softmax(expected, dim=-1)[0]
        assert torch.allclose(torch.tensor(shown["probabilities"], dtype=torch.float32), expected, atol=1e-6)
        assert sum(p > 0 for p in shown["shaped"]) == min(10, int((expected > 0).sum()))
    shown = set_control(page, "temperature", 0)  # greedy: everything on the argmax
    assert shown["shaped"][0] == 1 and sum(shown["shaped"][1:]) == 0


def generate(page, prompt: str, **controls) -> str:
    """Click Generate with these controls and wait until it has finished; the text it leaves."""
    show(page, prompt)
    for name, value in controls.items():
        if name in ("seed", "max_new_tokens"):  # read when Generate is clicked
            page.fill(f"#explorer-{name.replace('_', '-')}", str(value))
        else:
            set_control(page, name, value)
    page.click("#explorer-generate")
    page.wait_for_function("() => document.getElementById('explorer-generate').textContent === 'Generate'")
    return page.input_value("#explorer-prompt")


@torch.no_grad()
def test_greedy_generation_writes_pytorchs_text_even_past_the_context(page, exported):
    tokenizer = load_web_export(ROOT / "book" / "explorer")[1]
    prompt = PROMPTS[3] + "\n\n"  # 62 characters: the third new one overflows the context
    text = generate(page, prompt, temperature=0, max_new_tokens=5)
    expected = exported.generate(torch.tensor([tokenizer.encode(prompt)]), 5, SamplingOptions(greedy=True))
    assert text == tokenizer.decode(expected[0].tolist())


def test_sampling_is_seeded_and_generation_stops_when_asked(page):
    first = generate(page, "ROMEO:", seed=7, max_new_tokens=12)
    assert len(first) == 6 + 12 and first == generate(page, "ROMEO:", seed=7, max_new_tokens=12)
    assert generate(page, "ROMEO:", seed=8, max_new_tokens=12) != first
    show(page, "ROMEO:")
    page.fill("#explorer-max-new-tokens", "2000")
    page.click("#explorer-generate")
    page.wait_for_function("() => document.getElementById('explorer-prompt').value.length > 9")
    page.click("#explorer-generate")  # Stop
    stopped = page.input_value("#explorer-prompt")
    page.evaluate("() => new Promise((resolve) => setTimeout(resolve, 100))")  # turns of the page's event loop
    assert page.input_value("#explorer-prompt") == stopped and len(stopped) < 6 + 2000
    assert page.inner_text("#explorer-generate") == "Generate"


def serve_from(folder: Path):
    """A route handler that answers with the file of the requested name in ``folder``."""
    return lambda route: route.fulfill(path=folder / route.request.url.rsplit("/", 1)[1])


@torch.no_grad()
def test_an_exported_checkpoint_gives_the_same_logits_in_the_browser(page, tmp_path):
    checkpoint = write_checkpoint(tmp_path / "run", bias=True, gelu_approximate="tanh", tie_weights=False)
    original, tokenizer = load_model(checkpoint)
    ids = tokenizer.encode("the lazy dog")
    for dtype in ("float32", "float16"):
        out = tmp_path / dtype
        assert main(["export-web", "--checkpoint", str(checkpoint), "--out", str(out), "--dtype", dtype]) == 0
        page.context.route("**/tiny-export/*", serve_from(out))
        logits = run_in_page(page, """const model = await tt.loadModel(new URL("/tiny-export/manifest.json", location));
            return Array.from(tt.forward(model, arg).logits);""", ids)
        page.context.unroute("**/tiny-export/*")
        logits = torch.tensor(logits).view(len(ids), -1)
        exported, _ = load_web_export(out)
        assert (logits - exported(torch.tensor([ids]))[0]).abs().max() < LOGIT_TOLERANCE
        if dtype == "float32":  # the weights exactly: the checkpoint's own logits
            assert (logits - original(torch.tensor([ids]))[0]).abs().max() < LOGIT_TOLERANCE
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
        assert manifest["dtype"] == dtype
