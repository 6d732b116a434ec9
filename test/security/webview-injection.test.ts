// Webview injection: the chat renders model answers and file contents with webview/markdown.ts.
// Beyond the fixed cases of test/unit/markdown.test.ts, fast-check composes hostile fragments
// (script and event-handler markup, javascript:/data:/vbscript: links in every markdown link form,
// autolinks, HTML entities that spell those schemes, nested and unclosed tags, reference links) with
// ordinary markdown, and every rendering — the HTML string and the DOM the chat shows — must be inert.
import assert from 'node:assert/strict';
import { it } from 'node:test';
import * as fc from 'fast-check';
import { JSDOM } from 'jsdom';
import { createMarkdownRenderer } from '../../webview/markdown';
import { tracked } from '../reliability/record';

const FRAGMENTS = [
  '<script>window.pwned=1</script>', '<img src=x onerror=window.pwned=1>', '<svg/onload=window.pwned=1>', '<iframe src=javascript:alert(1)>', '<a href="javascript:alert(1)">x</a>',
  '[x](javascript:alert(1))', '[x](JaVaScRiPt:alert(1))', '[x](java\tscript:alert(1))', '[x](&#106;avascript:alert(1))', '[x](javascript&#58;alert(1))', '[x](data:text/html,<script>alert(1)</script>)',
  '[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)', '[x](vbscript:msgbox(1))', '[x]( javascript:alert(1) )', '[x](<javascript:alert(1)>)', '[x]: javascript:alert(1)\n\n[x]',
  '<javascript:alert(1)>', '<http://evil.example/x>', '<data:text/html,hi>', '![img](javascript:alert(1))', '![img](http://evil.example/pixel.png)', '[![x](a.png)](javascript:alert(1))',
  '<b onmouseover=alert(1)>bold</b>', '<div><p><span onclick=alert(1)>', '<a href=x', '</code><script>', '```html\n<script>alert(1)</script>\n```', '`<img src=x onerror=alert(1)>`',
  '&lt;script&gt;alert(1)&lt;/script&gt;', '&#60;img src=x onerror=alert(1)&#62;', '<style>*{background:url(javascript:alert(1))}</style>', '<math><mi xlink:href="javascript:alert(1)">x</mi></math>',
  '<form action=javascript:alert(1)><button>go</button></form>', '<meta http-equiv=refresh content="0;url=javascript:alert(1)">', '<base href=javascript:alert(1)//>', '<object data=javascript:alert(1)>',
  '[x](https://example.com "title onmouseover=alert(1)")', '<a href="https://example.com" onclick="alert(1)">ok</a>', '<!-- <script>alert(1)</script> -->', '<![CDATA[<script>alert(1)</script>]]>',
];
const MARKDOWN = ['# Title\n', '- item\n', '1. one\n', '> quote\n', '**bold** ', '_em_ ', '`code` ', '\n\n', '| a | b |\n|---|---|\n| 1 | 2 |\n', '[ok](https://example.com) ', '[file](src/a.ts#L3) ', '    indented\n'];

const BLOCKED_TAGS = ['script', 'img', 'iframe', 'object', 'embed', 'svg', 'math', 'style', 'link', 'meta', 'form', 'input', 'button', 'video', 'audio', 'source', 'base', 'frame', 'frameset', 'template'];

function activeParts(root: Element | DocumentFragment, allowHref: boolean): string[] {
  const found: string[] = [];
  for (const el of Array.from(root.querySelectorAll('*'))) {
    const tag = el.tagName.toLowerCase();
    if (BLOCKED_TAGS.includes(tag) && !(tag === 'button' && el.classList.contains('code-action'))) found.push(`<${tag}>`);
    for (const attr of Array.from(el.attributes)) {
      const name = attr.name.toLowerCase();
      if (name.startsWith('on')) found.push(`${tag}[${name}]`);
      if (['src', 'srcset', 'action', 'formaction', 'xlink:href', 'style', 'background', 'poster', 'data'].includes(name)) found.push(`${tag}[${name}]`);
      if (name === 'href' && !allowHref) found.push(`${tag}[href=${attr.value}]`);
      if (name === 'href' && !/^(https?:\/\/|#|[^:]*$)/i.test(attr.value)) found.push(`${tag}[href=${attr.value}]`);
      if (/^\s*(javascript|vbscript|data):/i.test(attr.value)) found.push(`${tag}[${name}=${attr.value}]`);
    }
  }
  return found;
}

it('hostile markdown renders inert, in the HTML and in the chat DOM', { timeout: 300_000 }, async () => {
  await tracked('security-webview', {
    section: 'security',
    name: 'webview markdown injection',
    injected: `${FRAGMENTS.length} hostile fragments (<script>, on*=, javascript:/data:/vbscript: links in inline, reference, autolink and entity-encoded forms, nested/unclosed tags) composed at random with markdown`,
    expected: 'no script, handler, loading tag or navigating link in the rendered HTML or DOM; links inert (data-href only)',
  }, async (figures) => {
    const dom = new JSDOM('<!DOCTYPE html><div id="root"></div>', { runScripts: 'outside-only' });
    const win = dom.window as unknown as Window & typeof globalThis & { pwned?: number };
    const renderer = createMarkdownRenderer(win);
    const root = win.document.getElementById('root')!;
    const runs = Number(process.env.TITAN_INJECTION_RUNS ?? 500);
    let checked = 0;
    fc.assert(
      fc.property(fc.array(fc.oneof(fc.constantFrom(...FRAGMENTS), fc.constantFrom(...MARKDOWN), fc.string({ maxLength: 6 })), { minLength: 1, maxLength: 8 }), (parts) => {
        const text = parts.join('');
        const tpl = win.document.createElement('template');
        tpl.innerHTML = renderer.toHtml(text);
        assert.deepEqual(activeParts(tpl.content, true), [], `toHtml(${JSON.stringify(text)})`);
        renderer.renderInto(root, text);
        assert.deepEqual(activeParts(root, false), [], `renderInto(${JSON.stringify(text)})`);
        checked++;
      }),
      { numRuns: runs, seed: Number(process.env.TITAN_FUZZ_SEED ?? 42) },
    );
    for (const f of FRAGMENTS) {
      renderer.renderInto(root, f);
      assert.deepEqual(activeParts(root, false), [], f);
    }
    assert.equal(win.pwned, undefined, 'a payload ran');
    figures['documents rendered'] = checked + FRAGMENTS.length;
    figures.fragments = FRAGMENTS.length;
  });
});
