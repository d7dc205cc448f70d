// Render the book's math with KaTeX, which the site serves itself (see book/mkdocs_hooks.py).
// pymdownx.arithmatex (generic mode) leaves each formula as TeX in an element of class "arithmatex":
// \( … \) for inline math, \[ … \] for display math. A formula KaTeX cannot parse stays as TeX and
// is reported on the console (the site's browser test fails on console errors).
const DELIMITED = /^\\([[(])([\s\S]*)\\[\])]$/;

function renderMath() {
  for (const element of document.querySelectorAll(".arithmatex")) {
    if (element.querySelector(".katex")) continue; // already rendered
    const text = element.textContent.trim();
    const match = text.match(DELIMITED);
    const tex = match ? match[2] : text;
    const displayMode = match ? match[1] === "[" : element.tagName === "DIV";
    try {
      katex.render(tex, element, { displayMode, throwOnError: true });
    } catch (error) {
      console.error(`KaTeX could not render ${text}: ${error.message}`);
    }
  }
}

// Material's document$ emits on every page load, including instant navigation if it is turned on.
document$.subscribe(renderMath);
