// Markdown → sanitized DOM for answers. Model output and file contents are untrusted:
//  - markdown-it runs with html: false, so raw HTML in the text is shown as text, and its link
//    validator already refuses javascript:, vbscript:, file: and data: links (they stay text);
//  - DOMPurify then allows only the tags markdown produces, with no event handlers and no styles;
//  - links lose their href (kept in data-href) and images become their alt text, so nothing in an
//    answer navigates or loads: a click is a message to the extension, which decides.
// The renderer takes the window it works in, so tests run it under jsdom.
import MarkdownIt from 'markdown-it';
import createDOMPurify, { type Config } from 'dompurify';

const ALLOWED_TAGS = ['p', 'br', 'hr', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'em', 'strong', 's', 'del', 'code', 'pre', 'blockquote', 'ul', 'ol', 'li', 'a', 'table', 'thead', 'tbody', 'tr', 'th', 'td', 'span'];
const ALLOWED_ATTR = ['href', 'title', 'class', 'start', 'align'];
const SAFE_HREF = /^(https?:\/\/|#|[^:]*$)/i;

export interface MarkdownRenderer {
  /** Sanitized HTML for `markdown` (links still carry href; use renderInto for the DOM). */
  toHtml(markdown: string): string;
  /** Replaces `target`'s content with the rendered markdown, links made inert, code blocks with actions. */
  renderInto(target: HTMLElement, markdown: string, codeActions?: boolean): void;
}

export function createMarkdownRenderer(win: Window & typeof globalThis): MarkdownRenderer {
  const md = new MarkdownIt({ html: false, linkify: false, typographer: false, breaks: false });
  md.renderer.rules.image = (tokens, idx) => md.utils.escapeHtml(`[image: ${tokens[idx].content || 'no description'}]`);
  const purify = createDOMPurify(win);
  const config: Config = {
    ALLOWED_TAGS,
    ALLOWED_ATTR,
    ALLOW_DATA_ATTR: false,
    ALLOW_ARIA_ATTR: false,
    KEEP_CONTENT: true,
    ALLOWED_URI_REGEXP: SAFE_HREF,
  };
  const doc = win.document;

  const toHtml = (markdown: string): string => purify.sanitize(md.render(markdown), config) as string;

  function renderInto(target: HTMLElement, markdown: string, codeActions = true): void {
    const template = doc.createElement('template');
    template.innerHTML = toHtml(markdown);
    const content = template.content;
    for (const a of Array.from(content.querySelectorAll('a'))) {
      const href = a.getAttribute('href') ?? '';
      a.removeAttribute('href');
      if (href && SAFE_HREF.test(href)) {
        a.setAttribute('data-href', href);
        a.classList.add('link');
        a.setAttribute('role', 'link');
        a.setAttribute('tabindex', '0');
        a.title = href;
      }
    }
    if (codeActions) {
      for (const pre of Array.from(content.querySelectorAll('pre'))) {
        const code = pre.querySelector('code');
        const block = doc.createElement('div');
        block.className = 'code-block';
        const bar = doc.createElement('div');
        bar.className = 'code-actions';
        const lang = /(?:^|\s)language-([\w+#.-]+)/.exec(code?.className ?? '')?.[1];
        if (lang) {
          const label = doc.createElement('span');
          label.className = 'code-lang';
          label.textContent = lang;
          bar.appendChild(label);
        }
        for (const [action, text, title] of [['copy', 'Copy', 'Copy the code'], ['insert', 'Insert', 'Insert the code at the cursor']] as const) {
          const b = doc.createElement('button');
          b.type = 'button';
          b.className = `code-action ${action}`;
          b.setAttribute('data-action', action);
          b.title = title;
          b.textContent = text;
          bar.appendChild(b);
        }
        pre.replaceWith(block);
        block.append(bar, pre);
      }
    }
    target.replaceChildren(content);
  }

  return { toHtml, renderInto };
}

/** The code of the block a code action button belongs to. */
export function codeOfAction(button: Element): string | null {
  return button.closest('.code-block')?.querySelector('pre code, pre')?.textContent ?? null;
}
