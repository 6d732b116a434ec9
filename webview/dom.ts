// The element helper every webview builds its DOM with (text only through textContent, never HTML).

export function el<K extends keyof HTMLElementTagNameMap>(tag: K, className?: string, text?: string, id?: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  if (id) e.id = id;
  return e;
}
