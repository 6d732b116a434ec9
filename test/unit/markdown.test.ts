// The chat's markdown renderer (webview/markdown.ts) under jsdom: hostile answers and file contents
// render as inert text — no script, no event handler, no navigating link, no remote load — while
// ordinary markdown (code blocks, lists, links) still renders.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { JSDOM } from 'jsdom';
import { codeOfAction, createMarkdownRenderer } from '../../webview/markdown';

function render(markdown: string): { root: HTMLElement; window: JSDOM['window'] } {
  const dom = new JSDOM('<!DOCTYPE html><div id="root"></div>', { runScripts: 'outside-only' });
  const window = dom.window;
  const renderer = createMarkdownRenderer(window as unknown as Window & typeof globalThis);
  const root = window.document.getElementById('root') as unknown as HTMLElement;
  renderer.renderInto(root, markdown);
  return { root, window };
}

/** Everything in the rendered tree that could run code, navigate or load something. */
function activeParts(root: HTMLElement): string[] {
  const found: string[] = [];
  for (const el of Array.from(root.querySelectorAll('*'))) {
    const tag = el.tagName.toLowerCase();
    if (['script', 'img', 'iframe', 'object', 'embed', 'svg', 'math', 'style', 'link', 'meta', 'form', 'input', 'video', 'audio', 'source', 'base'].includes(tag)) found.push(`<${tag}>`);
    for (const attr of Array.from(el.attributes)) {
      const name = attr.name.toLowerCase();
      if (name.startsWith('on')) found.push(`${tag}[${name}]`);
      if (['href', 'src', 'srcset', 'action', 'formaction', 'xlink:href', 'style', 'background', 'poster'].includes(name)) found.push(`${tag}[${name}=${attr.value}]`);
      if (/^\s*(javascript|vbscript|data):/i.test(attr.value)) found.push(`${tag}[${name}=${attr.value}]`);
    }
  }
  return found;
}

const HOSTILE: [string, string][] = [
  ['script tag', 'Look: <script>window.pwned = 1</script> done'],
  ['img onerror', 'An image <img src=x onerror="window.pwned = 1"> here'],
  ['svg onload', '<svg onload="window.pwned=1"><circle r=1></circle></svg>'],
  ['iframe', '<iframe src="https://evil.example/"></iframe>'],
  ['javascript: link', '[click me](javascript:window.pwned=1)'],
  ['JAVASCRIPT: link, upper case', '[click me](JAVASCRIPT:window.pwned=1)'],
  ['entity-encoded javascript: link', '[click me](&#106;avascript:window.pwned=1)'],
  ['javascript: link with tab', '[click me](java\tscript:window.pwned=1)'],
  ['javascript: autolink', '<javascript:window.pwned=1>'],
  ['vbscript: link', '[click](vbscript:msgbox(1))'],
  ['data: link', '[click](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)'],
  ['reference-style javascript: link', '[click][x]\n\n[x]: javascript:window.pwned=1'],
  ['raw html anchor', '<a href="javascript:window.pwned=1">click</a>'],
  ['remote image', '![tracker](https://evil.example/pixel.png)'],
  ['image with onerror in title', '![x](x "\\" onerror=\\"window.pwned=1")'],
  ['style tag', '<style>body { display: none }</style>'],
  ['html in a heading', '# Title <img src=x onerror=alert(1)>'],
  ['html in a table', '| a | b |\n|---|---|\n| <script>alert(1)</script> | <b onmouseover=alert(1)>x</b> |'],
  ['form', '<form action="https://evil.example"><input name=x></form>'],
];

describe('markdown rendering of untrusted text', () => {
  for (const [name, markdown] of HOSTILE) {
    it(`renders ${name} inert`, () => {
      const { root, window } = render(markdown);
      assert.deepEqual(activeParts(root), [], `active parts in ${root.innerHTML}`);
      assert.equal((window as unknown as { pwned?: number }).pwned, undefined);
    });
  }

  it('shows raw HTML from the text as text', () => {
    const { root } = render('Before <script>alert(1)</script> and <img src=x onerror=alert(1)> after');
    assert.match(root.textContent ?? '', /<script>alert\(1\)<\/script>/);
    assert.match(root.textContent ?? '', /<img src=x onerror=alert\(1\)>/);
    assert.equal(root.querySelectorAll('script, img').length, 0);
  });

  it('keeps a javascript: link as visible text, not a link', () => {
    const { root } = render('[click me](javascript:alert(1))');
    assert.equal(root.querySelectorAll('a').length, 0);
    assert.match(root.textContent ?? '', /\[click me\]\(javascript:alert\(1\)\)/);
  });

  it('turns images into their description', () => {
    const { root } = render('![build status](https://evil.example/badge.svg)');
    assert.equal(root.querySelectorAll('img').length, 0);
    assert.match(root.textContent ?? '', /\[image: build status\]/);
  });

  it('makes web and workspace links inert, with the target kept for the extension', () => {
    const { root } = render('See [the docs](https://example.com/docs) and [retry](src/retry.ts#L3).');
    const links = Array.from(root.querySelectorAll('a'));
    assert.equal(links.length, 2);
    for (const a of links) {
      assert.equal(a.getAttribute('href'), null, 'no href: a click cannot navigate the webview');
      assert.equal(a.getAttribute('role'), 'link');
    }
    assert.deepEqual(links.map((a) => a.getAttribute('data-href')), ['https://example.com/docs', 'src/retry.ts#L3']);
  });

  it('renders code blocks with copy and insert actions and the code as text', () => {
    const code = 'const x = "<script>alert(1)</script>";\nconsole.log(x);';
    const { root } = render(`Here:\n\n\`\`\`ts\n${code}\n\`\`\`\n`);
    const block = root.querySelector('.code-block');
    assert.ok(block, 'a code block');
    assert.equal(block.querySelector('.code-lang')?.textContent, 'ts');
    const buttons = Array.from(block.querySelectorAll('button.code-action')).map((b) => b.getAttribute('data-action'));
    assert.deepEqual(buttons, ['copy', 'insert']);
    assert.equal(codeOfAction(block.querySelector('button.insert')!), `${code}\n`);
    assert.equal(root.querySelectorAll('script').length, 0);
  });

  it('renders ordinary markdown', () => {
    const { root } = render('# Title\n\nSome **bold** and `code`.\n\n- one\n- two\n\n> quote\n\n| a | b |\n|---|---|\n| 1 | 2 |\n');
    assert.equal(root.querySelector('h1')?.textContent, 'Title');
    assert.equal(root.querySelector('strong')?.textContent, 'bold');
    assert.equal(root.querySelectorAll('li').length, 2);
    assert.ok(root.querySelector('blockquote'));
    assert.equal(root.querySelectorAll('td').length, 2);
  });

  it('re-renders a growing stream without keeping stale nodes', () => {
    const dom = new JSDOM('<!DOCTYPE html><div id="root"></div>');
    const renderer = createMarkdownRenderer(dom.window as unknown as Window & typeof globalThis);
    const root = dom.window.document.getElementById('root') as unknown as HTMLElement;
    let text = '';
    for (const fragment of ['The ', '`retry', 'Delay` fun', 'ction\n\n```js\nretry', 'Delay(1)\n```']) {
      text += fragment;
      renderer.renderInto(root, text);
    }
    assert.equal(root.querySelectorAll('.code-block').length, 1);
    assert.equal(root.querySelector('p code')?.textContent, 'retryDelay');
  });
});
