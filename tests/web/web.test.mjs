// kvrag's web page (web/, served at / by `kvrag serve`) in headless Chromium: Debian's
// /usr/bin/chromium driven by playwright-core, with --no-sandbox and a fresh profile per run.
// One server on the stories260K model (../shared/data) with --api-key, --memory, --cors and an
// --alias (so the model picker shows):
// the key asked for once, chat with streamed tokens, stop mid-stream and the cells freed on the
// KV view, the history policy's dropped messages shown, the KV view live while requests run,
// upload (picker and drag-and-drop) with per-file progress, list, search, ask with sources,
// delete, and the page used from another origin through CORS. A screenshot of each tab goes to
// KVRAG_SCREENSHOT_DIR (ctest: build/web-screenshots).
//
// Run by ctest as `node tests/web/web.test.mjs` with KVRAG_BINARY set. Exits 77 (ctest: skipped)
// when chromium, playwright-core or the shared model is missing, unless KVRAG_REQUIRE_SHARED=1.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
const SOURCE_DIR = process.env.KVRAG_SOURCE_DIR || resolve(HERE, '..', '..');
const BINARY = process.env.KVRAG_BINARY;
const CHROMIUM = process.env.KVRAG_CHROMIUM || '/usr/bin/chromium';
const SHARED = process.env.KVRAG_SHARED_DATA || join(SOURCE_DIR, '..', 'shared', 'data');
const MODEL = join(SHARED, 'models', 'stories260K.gguf');
const SHOTS = process.env.KVRAG_SCREENSHOT_DIR || join(tmpdir(), 'kvrag-web-screenshots');
const KEY = 'web-test-key';

// Missing inputs: skip (exit 77) with the reason, or fail under KVRAG_REQUIRE_SHARED=1 (CI).
function skipUnless(ok, why) {
  if (ok) return;
  if (process.env.KVRAG_REQUIRE_SHARED === '1') {
    console.error('KVRAG_REQUIRE_SHARED=1 turns this skip into a failure: ' + why);
    process.exit(1);
  }
  console.log('SKIP web_page_chromium: ' + why);
  process.exit(77);
}
if (!BINARY) {
  console.error('set KVRAG_BINARY to the kvrag executable');
  process.exit(1);
}
skipUnless(existsSync(CHROMIUM), CHROMIUM + ' not found (apt-get install chromium; scripts/setup.sh does)');
skipUnless(existsSync(MODEL), MODEL + ' not found (../shared/data; set KVRAG_SHARED_DATA)');
let chromium;
try {
  ({ chromium } = await import('playwright-core'));
} catch (e) {
  skipUnless(false, 'playwright-core not installed (cd tests/web && npm ci; scripts/setup.sh does): ' + e.message);
}

let dir;
let server;
let serverLog = '';
let port;
let browser;
let page;
const pageErrors = [];  // uncaught exceptions in the page; none may happen

function freePort() {
  return new Promise((resolvePort, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const p = s.address().port;
      s.close(() => resolvePort(p));
    });
  });
}

// Starts `kvrag serve` and resolves once it logs "ready" (bounded).
function startServer(args) {
  return new Promise((resolveStart, reject) => {
    const proc = spawn(BINARY, ['serve', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    const timer = setTimeout(() => reject(new Error('server did not start in 20 s:\n' + serverLog)), 20000);
    proc.stderr.on('data', (data) => {
      serverLog += data.toString();
      if (serverLog.includes('kvrag serve: ready')) {
        clearTimeout(timer);
        resolveStart(proc);
      }
    });
    proc.on('exit', (code) => {
      clearTimeout(timer);
      if (!serverLog.includes('kvrag serve: ready')) reject(new Error(`server exited with ${code}:\n` + serverLog));
    });
  });
}

// The server's own view, read directly (not through the page): for cross-checking what the page shows.
async function serverJson(path, init = {}) {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { ...init, headers: { Authorization: 'Bearer ' + KEY, 'Content-Type': 'application/json', ...(init.headers || {}) } });
  assert.ok(res.ok, `${path}: HTTP ${res.status} ${await res.clone().text()}`);
  return res.json();
}

async function metric(name) {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`, { headers: { Authorization: 'Bearer ' + KEY } });
  const line = (await res.text()).split('\n').find((l) => l.startsWith(name + ' '));
  assert.ok(line, 'metric ' + name + ' missing');
  return Number(line.split(' ')[1]);
}

async function screenshot(name) {
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: join(SHOTS, name + '.png') });
}

async function showTab(name) {
  await page.click('#tab-' + name);
  await page.waitForSelector('#page-' + name + ':not([hidden])');
}

// Enters the key in the page's dialog (which must be showing) and waits for the page to start.
async function enterKey(p) {
  await p.waitForSelector('#key-dialog[open]', { timeout: 10000 });
  await p.fill('#key-input', KEY);
  await p.click('#key-ok');
  await p.waitForSelector('body[data-ready="true"]', { timeout: 15000 });
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'kvrag-web-'));
  port = await freePort();
  // --cors names the page's other spelling of this server (localhost vs 127.0.0.1), a different
  // origin to the browser: the CORS test loads the page from there.
  server = await startServer(['-m', MODEL, '--port', String(port), '--api-key', KEY, '--memory', join(dir, 'memory'),
    '--cors', `http://localhost:${port}`, '--parallel', '4', '--ctx', '8192', '--alias', 'tiny-stories', '-t', '1']);
  // launch() gives each run a fresh temporary profile.
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
  page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.on('pageerror', (e) => pageErrors.push(e.message));
});

after(async () => {
  if (browser) await browser.close();
  if (server) {
    const exited = new Promise((r) => server.on('exit', (code) => r(code)));
    server.kill('SIGTERM');
    let timer;
    const code = await Promise.race([exited, new Promise((r) => { timer = setTimeout(() => r('timeout'), 15000); })]);
    clearTimeout(timer);
    if (code === 'timeout') server.kill('SIGKILL');
    assert.equal(code, 0, 'server exit code after SIGTERM\n' + serverLog.slice(-3000));
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('the page loads without the key, asks for it once and keeps it for the tab', { timeout: 30000 }, async () => {
  let dialogs = 0;
  await page.exposeFunction('__dialogOpened', () => { dialogs++; });
  await page.addInitScript(() => {
    const show = HTMLDialogElement.prototype.showModal;
    HTMLDialogElement.prototype.showModal = function () { window.__dialogOpened(); return show.call(this); };
  });
  await page.goto(`http://127.0.0.1:${port}/`);
  await enterKey(page);
  assert.equal(await page.evaluate(() => sessionStorage.getItem('kvrag.apiKey')), KEY);
  await page.waitForSelector('#kv-strip:has-text("cells")');
  assert.equal(await page.textContent('#server-status'), 'stories260K');
  // A reload in the same tab keeps the key: no second dialog.
  await page.reload();
  await page.waitForSelector('body[data-ready="true"]');
  assert.equal(dialogs, 1, 'the key dialog opened ' + dialogs + ' times');
  assert.equal(await page.isVisible('#tab-memory'), true, 'the Memory tab shows with --memory');
  // Two names for the chat model (--alias): the picker offers both.
  assert.equal(await page.isVisible('#model-picker'), true);
  assert.deepEqual(await page.$$eval('#model option', (os) => os.map((o) => o.value)), ['stories260K', 'tiny-stories']);
});

test('chat streams tokens and renders the answer', { timeout: 30000 }, async () => {
  await page.fill('#system-prompt', 'You tell short stories.');
  await page.fill('#temperature', '0');
  // Long enough (about a second on a fast machine) that the page renders it in many frames.
  await page.fill('#max_tokens', '1500');
  await page.check('#ignore_eos');
  // Record the answer's length at every change while it streams: it grows in several steps.
  await page.evaluate(() => {
    window.__lengths = [];
    new MutationObserver(() => {
      const a = document.querySelector('.message.assistant.streaming .body');
      if (a) window.__lengths.push(a.textContent.length);
    }).observe(document.getElementById('messages'), { childList: true, subtree: true, characterData: true });
  });
  await page.fill('#prompt', 'Once upon a time');
  await page.press('#prompt', 'Enter');
  await page.waitForSelector('.message.assistant:not(.streaming) .meta:has-text("finish")', { timeout: 20000 });
  const lengths = await page.evaluate(() => window.__lengths);
  const distinct = new Set(lengths.filter((n) => n > 0));
  assert.ok(distinct.size >= 3, 'the answer grew in ' + distinct.size + ' steps while streaming: ' + JSON.stringify(lengths.slice(0, 40)));

  // The same request, greedy and not streamed, gives the same text as the page shows.
  const direct = await serverJson('/v1/chat/completions', { method: 'POST', body: JSON.stringify({
    messages: [{ role: 'system', content: 'You tell short stories.' }, { role: 'user', content: 'Once upon a time' }], temperature: 0, max_tokens: 1500, ignore_eos: true }) });
  const expected = await page.evaluate((t) => { const d = document.createElement('div'); d.innerHTML = window.renderMarkdown(t); return d.textContent; },
    direct.choices[0].message.content);
  assert.ok(expected.length > 0);
  assert.equal(await page.textContent('.message.assistant .body'), expected);
  const meta = await page.textContent('.message.assistant .meta');
  assert.match(meta, new RegExp(`${direct.usage.completion_tokens} generated tokens · finish: ${direct.choices[0].finish_reason}`));

  // A short exchange of two turns for the screenshot.
  await page.click('#new-chat');
  await page.uncheck('#ignore_eos');
  await page.fill('#max_tokens', '48');
  for (const [i, text] of ['Once upon a time', 'What happened next?'].entries()) {
    await page.fill('#prompt', text);
    await page.press('#prompt', 'Enter');
    await page.waitForSelector(`.message.assistant:nth-child(${2 * i + 2}):not(.streaming) .meta:has-text("finish")`, { timeout: 20000 });
  }
  await screenshot('chat');
});

test('stop cancels the request mid-stream and the KV view shows its cells freed', { timeout: 40000 }, async () => {
  const cancelledBefore = await metric('kvrag_requests_ended_total{outcome="cancelled"}');
  await page.click('#new-chat');
  await page.fill('#temperature', '0.8');
  await page.fill('#max_tokens', '1900');
  await page.fill('#prompt', 'Tell me a long story.');
  await page.click('#send');
  // Stop is pressed in the frame where the first words show: a round trip from here could
  // arrive after a fast machine has generated all 1900 tokens.
  await page.waitForFunction(() => {
    if ((document.querySelector('.message.assistant .body')?.textContent.length || 0) <= 10) return false;
    const stop = document.getElementById('stop');
    if (stop.disabled) throw new Error('the answer ended before Stop could be pressed');
    stop.click();
    return true;
  }, null, { polling: 'raf' });
  await page.waitForSelector('.message.assistant.stopped');
  assert.match(await page.textContent('.message.assistant .meta'), /stopped/);
  assert.equal(await page.isDisabled('#stop'), true);

  await showTab('kv');
  // The page's KV view: no sequence left, no cell used, the cancellation counted.
  await page.waitForFunction(() => document.querySelector('#kv-used b')?.textContent === '0' &&
    document.querySelectorAll('#kv-sequences tbody tr').length === 0, null, { timeout: 10000 });
  await page.waitForSelector('#kv-metrics dt:has-text(\'requests_ended_total{outcome="cancelled"}\')');
  const kv = await serverJson('/v1/kv');
  assert.equal(kv.cache.cells_used, 0);
  assert.equal(kv.sequences.length, 0);
  assert.equal(await page.textContent('#kv-free b'), String(kv.cache.cells_free));
  assert.ok(await metric('kvrag_requests_ended_total{outcome="cancelled"}') > cancelledBefore, 'the stopped request ended as cancelled (it did not run to its end)');
  const stoppedText = await page.evaluate(() => document.querySelector('.message.assistant .body').textContent.length);
  assert.ok(stoppedText > 10, 'the partial answer stays on the page');
  await showTab('chat');
});

test('the KV view follows running requests live and shows their cells come back', { timeout: 40000 }, async () => {
  // Four long requests from outside the page (--ctx 8192 holds all four reservations), whose
  // prompts share a long prefix that one short request has put into the prefix cache first:
  // their first cells are shared. The view is opened once each has sent its first piece, and
  // follows them while they run.
  const prefix = Array(8).fill('Lily and Tom went to the park to play with the big red ball.').join(' ');
  await serverJson('/v1/completions', { method: 'POST', body: JSON.stringify({ prompt: prefix, max_tokens: 1 }) });
  const controllers = [0, 1, 2, 3].map(() => new AbortController());
  const firstPieces = controllers.map((c, i) => fetch(`http://127.0.0.1:${port}/v1/completions`, {
    method: 'POST', signal: c.signal, headers: { Authorization: 'Bearer ' + KEY, 'Content-Type': 'application/json' },
    body: JSON.stringify({ prompt: prefix + ' The ' + ['cat', 'dog', 'bird', 'fish'][i], max_tokens: 1700, ignore_eos: true, stream: true }),
  }).then((res) => res.body.getReader().read()));
  await Promise.all(firstPieces);
  await showTab('kv');
  await page.waitForFunction(() => document.querySelectorAll('#kv-sequences tbody tr').length === 4 &&
    Number(document.querySelector('#kv-used b').textContent) > 0, null, { timeout: 10000 });
  const states = await page.$$eval('#kv-sequences tbody tr td:nth-child(3)', (tds) => tds.map((t) => t.textContent));
  for (const state of states) assert.match(state, /prefilling|decoding/);
  // The shared prefix: in the sequences' shared column (how many of the four reuse the cached
  // blocks depends on which step admits them) and in the summary.
  const shared = await page.$$eval('#kv-sequences tbody tr td:nth-child(5)', (tds) => tds.map((t) => Number(t.textContent)));
  assert.ok(shared.some((n) => n >= 16), 'shared cells per sequence: ' + JSON.stringify(shared));
  assert.ok(Number(await page.textContent('#kv-shared b')) >= 16);
  // The cells grow while they run: the view refreshes by itself.
  const used1 = Number(await page.textContent('#kv-used b'));
  await page.waitForFunction((u) => Number(document.querySelector('#kv-used b').textContent) > u, used1, { timeout: 10000 });
  await screenshot('kv');
  for (const c of controllers) c.abort();
  await page.waitForFunction(() => document.querySelector('#kv-used b')?.textContent === '0' &&
    document.querySelectorAll('#kv-sequences tbody tr').length === 0, null, { timeout: 10000 });
  assert.equal(await page.textContent('#kv-running b'), '0');
  await showTab('chat');
});

test('chat history beyond the context: the dropped messages are shown', { timeout: 40000 }, async () => {
  await page.click('#new-chat');
  await page.uncheck('#ignore_eos');
  await page.fill('#temperature', '0');
  await page.fill('#system-prompt', '');
  // Turn 1: a long message (most of the 2048-token context) with a short answer.
  await page.fill('#max_tokens', '20');
  const long = Array.from({ length: 65 }, (_, i) => `The cat number ${i} sat on a mat.`).join(' ');
  await page.fill('#prompt', long);
  await page.click('#send');
  await page.waitForSelector('.message.assistant:not(.streaming) .meta:has-text("finish")', { timeout: 20000 });
  assert.equal(await page.isVisible('#dropped-note'), false);
  // Turn 2 asks for a long answer: turn 1 no longer fits beside it and the server drops it.
  await page.fill('#max_tokens', '1200');
  await page.fill('#prompt', 'And then?');
  await page.click('#send');
  await page.waitForSelector('.message.assistant:nth-child(4):not(.streaming) .meta', { timeout: 30000 });
  assert.equal(await page.$$eval('.message.dropped', (els) => els.length), 2, 'the first user message and its answer are greyed out');
  assert.deepEqual(await page.$$eval('.message.dropped', (els) => els.map((e) => e.dataset.role)), ['user', 'assistant']);
  assert.match(await page.textContent('#dropped-note'), /^2 earlier messages were left out/);
});

test('memory: upload with progress, list, search, ask with sources, delete', { timeout: 60000 }, async () => {
  await showTab('memory');
  const file = join(dir, 'lighthouse.md');
  writeFileSync(file, '# The lighthouse\n\nThe lighthouse keeper Tom painted the tower red in 1962.\n\nLater the light was automated and Tom retired to the village.\n');
  // One file through the picker, one dropped on the drop zone.
  await page.setInputFiles('#file-input', file);
  const dataTransfer = await page.evaluateHandle(() => {
    const dt = new DataTransfer();
    dt.items.add(new File(['The baker Anna bakes bread for the whole village every morning.\n'], 'bakery.txt', { type: 'text/plain' }));
    return dt;
  });
  await page.dispatchEvent('#drop-zone', 'drop', { dataTransfer });
  for (const name of ['lighthouse.md', 'bakery.txt']) {
    await page.waitForSelector(`.upload[data-file="${name}"][data-state="done"]`, { timeout: 20000 });
    assert.equal(await page.$eval(`.upload[data-file="${name}"] progress`, (p) => p.value), 100);
    await page.waitForSelector(`#documents tr[data-document-id="${name}"]`);
  }
  const listed = await serverJson('/documents?index=default');
  assert.deepEqual(listed.documents.map((d) => d.documentId).sort(), ['bakery.txt', 'lighthouse.md']);

  await page.fill('#search-query', 'lighthouse keeper');
  await page.click('#search-form button');
  await page.waitForSelector('#search-results .result');
  assert.match(await page.textContent('#search-results .result .chunk'), /lighthouse keeper Tom/);

  await page.fill('#ask-question', 'Who painted the lighthouse tower?');
  await page.click('#ask-button');
  await page.waitForSelector('#ask-sources .source-link', { timeout: 30000 });
  assert.ok((await page.textContent('#ask-answer')).trim().length > 0, 'an answer is shown');
  const links = await page.$$eval('#ask-sources .source-link', (as) => as.map((a) => a.textContent));
  assert.ok(links.some((t) => /^\[\d+\] lighthouse\.md · part 0 · relevance 0\.\d{3}$/.test(t)), JSON.stringify(links));
  // Each source opens its chunk's text.
  const index = links.findIndex((t) => t.includes('lighthouse.md'));
  const link = (await page.$$('#ask-sources .source-link'))[index];
  await link.click();
  const details = await page.$(`#source-${index + 1}`);
  assert.equal(await details.evaluate((d) => d.open), true);
  assert.match(await details.$eval('pre', (p) => p.textContent), /painted the tower red in 1962/);
  await screenshot('memory');

  await page.click('#documents tr[data-document-id="bakery.txt"] button.delete');
  await page.waitForSelector('#documents tr[data-document-id="bakery.txt"]', { state: 'detached' });
  assert.deepEqual((await serverJson('/documents?index=default')).documents.map((d) => d.documentId), ['lighthouse.md']);
});

test('another origin uses the page through CORS (--cors) with its own key prompt', { timeout: 30000 }, async () => {
  const context = await browser.newContext();
  const other = await context.newPage();
  const failed = [];
  other.on('requestfailed', (r) => failed.push(r.url()));
  await other.goto(`http://localhost:${port}/?server=http://127.0.0.1:${port}`);
  await enterKey(other);
  await other.waitForSelector('#kv-strip:has-text("cells")');
  assert.equal(await other.textContent('#server-status'), 'stories260K');
  assert.equal(await other.isVisible('#tab-memory'), true);
  assert.deepEqual(failed, []);
  await context.close();
});

test('no uncaught error in the page', () => {
  assert.deepEqual(pageErrors, []);
});
