import "./style.css";

/**
 * Placeholder shell. The real approval window arrives in the next issue.
 *
 * DOM rule for this codebase: text goes in through `textContent` only, never
 * `innerHTML` (the CSP forbids inline script, and approval data is untrusted).
 */
function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className: string,
  text?: string,
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  node.className = className;
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

function mount(root: HTMLElement): void {
  const header = el("header", "app-header");
  header.append(el("h1", "app-title", "Countersign"));

  const main = el("main", "app-main");
  main.append(
    el("p", "placeholder", "Inbox — the window arrives in the next issue"),
  );

  root.replaceChildren(header, main);
}

const root = document.getElementById("app");
if (root === null) {
  throw new Error("Countersign: #app root element is missing from index.html");
}
mount(root);
