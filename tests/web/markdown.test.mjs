// web/markdown.js, the page's Markdown renderer, without a browser: what it renders, and that
// no model output can put markup of its own into the page (everything escaped, links only for
// http(s) URLs). Run by ctest as `node --test tests/web/markdown.test.mjs` (web_markdown_node).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import vm from 'node:vm';

const source = readFileSync(join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'web', 'markdown.js'), 'utf8');
const sandbox = {};
vm.runInNewContext(source, sandbox);
const md = sandbox.renderMarkdown;

test('blocks and inline markup', () => {
  const table = [
    ['Hello **world** and *you*', '<p>Hello <strong>world</strong> and <em>you</em></p>'],
    ['line one\nline two\n\nnext', '<p>line one<br>line two</p><p>next</p>'],
    ['# Title', '<h1>Title</h1>'],
    ['### Sub ###', '<h3>Sub</h3>'],
    ['- a\n- b *c*', '<ul><li>a</li><li>b <em>c</em></li></ul>'],
    ['1. one\n2. two', '<ol><li>one</li><li>two</li></ol>'],
    ['3. three\n4. four', '<ol start="3"><li>three</li><li>four</li></ol>'],
    ['> quoted **bold**', '<blockquote><p>quoted <strong>bold</strong></p></blockquote>'],
    ['---', '<hr>'],
    ['use `a*b*c` here', '<p>use <code>a*b*c</code> here</p>'],
    ['```js\nlet x = 1 < 2;\n```', '<pre><code class="language-js">let x = 1 &lt; 2;</code></pre>'],
    ['see [docs](https://example.com/a?b=1&c=2)', '<p>see <a href="https://example.com/a?b=1&amp;c=2" target="_blank" rel="noopener noreferrer">docs</a></p>'],
    ['snake_case_name stays', '<p>snake_case_name stays</p>'],
    ['2 * 3 * 4', '<p>2 * 3 * 4</p>'],
  ];
  for (const [input, html] of table) assert.equal(md(input), html, JSON.stringify(input));
});

test('a fence still open while streaming renders as code so far', () => {
  assert.equal(md('Here:\n```\nfor i in x:\n  print(i)'), '<p>Here:</p><pre><code>for i in x:\n  print(i)</code></pre>');
});

test('model output cannot inject markup', () => {
  const attacks = [
    '<script>alert(1)</script>',
    '<img src=x onerror=alert(1)>',
    '[click](javascript:alert(1))',
    '[x](https://a.example/"onmouseover="alert(1))',
    '**<b onclick=alert(1)>**',
    '```\n</code></pre><script>alert(1)</script>\n```',
    '# <iframe src=//evil>',
    '- <a href=javascript:alert(1)>x</a>',
    '`<svg onload=alert(1)>`',
  ];
  for (const input of attacks) {
    const html = md(input);
    // Every tag in the output is one the renderer writes itself.
    for (const tag of html.match(/<[^>]*>/g) || []) {
      assert.match(tag, /^<\/?(p|br|strong|em|code|pre|h[1-6]|ul|ol|li|blockquote|hr|a)( (class|start|href|target|rel)="[^"<>]*")*>$/, `${JSON.stringify(input)} gave ${tag}`);
    }
    assert.ok(!/href="javascript:/i.test(html), html);
    assert.ok(!/<(script|img|iframe|svg|b)[\s>]/i.test(html), html);
  }
  assert.equal(md('[click](javascript:alert(1))'), '<p>[click](javascript:alert(1))</p>');
});
