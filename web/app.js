'use strict';
// kvrag's web page (docs/web.md): chat with streamed tokens, the memory service (serve
// --memory) and a live picture of the KV cache. Plain browser JavaScript, no framework, no
// network access but the server's own API. `?server=http://host:port` points the page at
// another kvrag (that server needs --cors naming this page's origin).

const BASE = (new URLSearchParams(location.search).get('server') || '').replace(/\/+$/, '');
const KEY_STORE = 'kvrag.apiKey';
const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------------------------------------
// API access. The key is asked for once, on the first 401, and kept in sessionStorage (this
// tab only); every call sends it as a Bearer token. Concurrent 401s share one dialog.

let keyPrompt = null;

function authHeaders(extra) {
  const h = Object.assign({}, extra || {});
  const key = sessionStorage.getItem(KEY_STORE);
  if (key) h.Authorization = 'Bearer ' + key;
  return h;
}

function askForKey(message) {
  if (keyPrompt) return keyPrompt;
  keyPrompt = new Promise((resolve) => {
    const dlg = $('key-dialog');
    $('key-error').hidden = !message;
    $('key-error').textContent = message || '';
    $('key-input').value = '';
    dlg.addEventListener('close', () => {
      const key = $('key-input').value.trim();
      if (key) sessionStorage.setItem(KEY_STORE, key);
      keyPrompt = null;
      resolve(Boolean(key));
    }, { once: true });
    dlg.showModal();
  });
  return keyPrompt;
}

// fetch() against the server with the key; on 401 asks for a key and tries again.
async function api(path, opts = {}) {
  for (let attempt = 0; ; attempt++) {
    const sent = sessionStorage.getItem(KEY_STORE);
    const res = await fetch(BASE + path, Object.assign({}, opts, { headers: authHeaders(opts.headers) }));
    if (res.status !== 401 || attempt >= 3) return res;
    // Another call may have stored a new key meanwhile: retry with it before asking.
    if (sessionStorage.getItem(KEY_STORE) !== sent) continue;
    if (sent) sessionStorage.removeItem(KEY_STORE);
    if (!(await askForKey(sent ? 'The server refused that key; enter it again.' : ''))) return res;
  }
}

// The server's error message (its JSON error body), or the status line.
async function errorText(res) {
  const text = await res.text().catch(() => '');
  try {
    const j = JSON.parse(text);
    if (j && j.error) return typeof j.error === 'string' ? j.error : j.error.message || JSON.stringify(j.error);
  } catch (e) { /* not JSON */ }
  return 'HTTP ' + res.status + (text ? ': ' + text.slice(0, 300) : '');
}

async function apiJson(path, opts) {
  const res = await api(path, opts);
  if (!res.ok) throw new Error(await errorText(res));
  return res.json();
}

function showError(el, message) {
  el.textContent = message || '';
  el.hidden = !message;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

// ---------------------------------------------------------------------------------------------
// Tabs

function showTab(name) {
  for (const tab of document.querySelectorAll('[role=tab]')) tab.setAttribute('aria-selected', String(tab.dataset.tab === name));
  for (const page of document.querySelectorAll('.page')) page.hidden = page.id !== 'page-' + name;
  if (name === 'memory') refreshDocuments();
  kvView.poll();
}

// ---------------------------------------------------------------------------------------------
// Chat. The page keeps the whole conversation and sends it every turn, as OpenAI clients do;
// the server fits it into the context by its history policy and says how many of the oldest
// messages it left out (X-Kvrag-Messages-Dropped), which the page greys out.

const chat = { messages: [], controller: null };

function samplingFields() {
  const out = {};
  for (const name of ['temperature', 'top_p', 'top_k', 'min_p', 'repeat_penalty', 'max_tokens', 'seed']) {
    const v = $(name).value.trim();
    if (v === '') continue;
    const n = Number(v);
    if (!Number.isFinite(n)) throw new Error(name + ' must be a number, got "' + v + '"');
    out[name] = n;
  }
  if ($('ignore_eos').checked) out.ignore_eos = true;
  return out;
}

function addMessage(role, content) {
  const body = el('div', { class: 'body' });
  const meta = el('div', { class: 'meta' });
  const li = el('li', { class: 'message ' + role, 'data-role': role }, el('div', { class: 'role', text: role }), body, meta);
  $('messages').append(li);
  const m = { role, content, li, body, meta, failed: false };
  renderMessage(m);
  chat.messages.push(m);
  return m;
}

// While tokens stream, the answer is rendered at most once per frame: rendering (Markdown and
// the layout that scrolling forces) on every token would fall seconds behind a fast model.
function scheduleRender(m) {
  if (m.renderPending) return;
  m.renderPending = true;
  requestAnimationFrame(() => {
    m.renderPending = false;
    renderMessage(m);
  });
}

function renderMessage(m) {
  if (m.role === 'assistant') m.body.innerHTML = window.renderMarkdown(m.content);
  else m.body.textContent = m.content;
  const list = $('messages');
  list.scrollTop = list.scrollHeight;
}

// The server dropped the `n` oldest messages of the history it was sent.
function markDropped(sent, n) {
  for (const m of chat.messages) m.li.classList.remove('dropped');
  for (const m of sent.slice(0, n)) m.li.classList.add('dropped');
  const note = $('dropped-note');
  note.hidden = n === 0;
  note.textContent = n === 0 ? '' : n + ' earlier message' + (n === 1 ? ' was' : 's were') +
    ' left out of the last answer\'s context by the server\'s history policy (greyed out below).';
}

function setBusy(busy) {
  $('send').disabled = busy;
  $('stop').disabled = !busy;
  document.body.classList.toggle('generating', busy);
}

async function sendChat() {
  const text = $('prompt').value.trim();
  if (!text || chat.controller) return;
  showError($('chat-error'), '');
  let sampling;
  try {
    sampling = samplingFields();
  } catch (e) {
    return showError($('chat-error'), e.message);
  }
  $('prompt').value = '';
  addMessage('user', text);
  const history = chat.messages.filter((m) => !m.failed);
  const messages = [];
  const system = $('system-prompt').value.trim();
  if (system) messages.push({ role: 'system', content: system });
  for (const m of history) messages.push({ role: m.role, content: m.content });
  const body = Object.assign({ messages, stream: true }, sampling);
  if ($('model').value) body.model = $('model').value;

  const answer = addMessage('assistant', '');
  answer.li.classList.add('streaming');
  chat.controller = new AbortController();
  setBusy(true);
  kvView.busy(true);
  let finish = '';
  let usage = null;
  try {
    const res = await api('/v1/chat/completions', {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body), signal: chat.controller.signal,
    });
    if (!res.ok) throw new Error(await errorText(res));
    markDropped(history, Number(res.headers.get('X-Kvrag-Messages-Dropped') || 0));
    await readEvents(res, (event) => {
      if (event.error) throw new Error(event.error.message || JSON.stringify(event.error));
      const choice = event.choices && event.choices[0];
      if (choice && choice.delta && typeof choice.delta.content === 'string') {
        answer.content += choice.delta.content;
        scheduleRender(answer);
      }
      if (choice && choice.finish_reason) finish = choice.finish_reason;
      if (event.usage) usage = event.usage;
    });
    answer.meta.textContent = (usage ? usage.prompt_tokens + ' prompt + ' + usage.completion_tokens + ' generated tokens · ' : '') +
      'finish: ' + (finish || 'none');
  } catch (e) {
    if (e.name === 'AbortError') {
      answer.li.classList.add('stopped');
      answer.meta.textContent = 'stopped: the request was cancelled and its cells freed';
      if (!answer.content) answer.failed = true;
    } else {
      answer.failed = true;
      answer.li.classList.add('failed');
      answer.meta.textContent = 'error';
      showError($('chat-error'), e.message);
    }
  } finally {
    renderMessage(answer);
    answer.li.classList.remove('streaming');
    chat.controller = null;
    setBusy(false);
    kvView.busy(false);
  }
}

// Reads a server-sent event stream, calling onEvent with each parsed `data:` JSON until [DONE].
async function readEvents(res, onEvent) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart()).join('\n');
      if (!data) continue;
      if (data === '[DONE]') return;
      onEvent(JSON.parse(data));
    }
  }
}

function newChat() {
  if (chat.controller) chat.controller.abort();
  chat.messages = [];
  $('messages').replaceChildren();
  markDropped([], 0);
  showError($('chat-error'), '');
}

// The chat models the server answers to (aliases too); the picker shows when there are several.
async function loadModels() {
  try {
    const j = await apiJson('/v1/models');
    const chatModels = (j.data || []).filter((m) => !m.meta || !m.meta.kind || m.meta.kind === 'chat');
    const select = $('model');
    select.replaceChildren(...chatModels.map((m) => el('option', { value: m.id, text: m.id + (m.meta && m.meta.alias_of ? ' (alias of ' + m.meta.alias_of + ')' : '') })));
    $('model-picker').hidden = chatModels.length < 2;
    if (chatModels.length === 0) showError($('chat-error'), 'The server runs no chat model (only ' + (j.data || []).map((m) => m.id).join(', ') + '); chat is unavailable.');
    $('server-status').textContent = chatModels.length ? chatModels[0].id : '';
  } catch (e) {
    showError($('chat-error'), 'Could not list models: ' + e.message);
  }
}

// ---------------------------------------------------------------------------------------------
// Memory (serve --memory): the routes of docs/api.md. The fields read here have the same
// names in kvrag's shapes and Kernel Memory's (documentId, index, completed/failed,
// relevantSources[].partitions[].text/relevance); the alternatives are read where they differ.

const memory = { available: false };

function memIndex() { return $('mem-index').value.trim() || 'default'; }
function docIdOf(d) { return d.documentId || d.document_id || d.id || ''; }

async function probeMemory() {
  const res = await api('/documents?index=' + encodeURIComponent(memIndex()));
  memory.available = res.ok;
  $('tab-memory').hidden = !res.ok;
  if (res.ok) renderDocuments(await res.json());
}

async function refreshDocuments() {
  if (!memory.available) return;
  try {
    renderDocuments(await apiJson('/documents?index=' + encodeURIComponent(memIndex())));
    showError($('mem-error'), '');
  } catch (e) {
    showError($('mem-error'), e.message);
  }
}

function renderDocuments(j) {
  const docs = Array.isArray(j) ? j : j.documents || [];
  const rows = docs.map((d) => {
    const id = docIdOf(d);
    const index = d.index || memIndex();
    return el('tr', { 'data-document-id': id },
      el('td', { text: id }), el('td', { text: index }), el('td', { text: d.state || (d.completed ? 'ready' : '') }),
      el('td', { text: d.chunks !== undefined ? String(d.chunks) : '' }),
      el('td', {}, el('button', { type: 'button', class: 'delete', text: 'Delete', onclick: () => deleteDocument(index, id) })));
  });
  $('documents').tBodies[0].replaceChildren(...rows);
}

async function deleteDocument(index, id) {
  try {
    await apiJson('/documents?index=' + encodeURIComponent(index) + '&documentId=' + encodeURIComponent(id), { method: 'DELETE' });
  } catch (e) {
    showError($('mem-error'), e.message);
  }
  refreshDocuments();
}

// One upload per file: XMLHttpRequest for the bytes' progress (fetch has none), then
// /upload-status until the document is completed or failed. Synchronous servers answer 200
// with the document ready; Kernel Memory's shape answers 202 and ingests in the background.
function uploadFile(file) {
  const bar = el('progress', { max: '100', value: '0' });
  const status = el('span', { class: 'upload-status', text: 'uploading' });
  const row = el('li', { class: 'upload', 'data-file': file.name }, el('span', { class: 'name', text: file.name }), bar, status);
  $('uploads').append(row);
  const index = memIndex();
  const done = (text, state) => {
    status.textContent = text;
    row.dataset.state = state;
    if (state === 'done') bar.value = 100;
    refreshDocuments();
  };
  const send = (attempt) => {
    const form = new FormData();
    form.append('index', index);
    form.append('file', file, file.name);
    const xhr = new XMLHttpRequest();
    xhr.open('POST', BASE + '/upload');
    for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) bar.value = Math.round((50 * e.loaded) / e.total); };
    xhr.onerror = () => done('failed: network error', 'failed');
    xhr.onload = async () => {
      if (xhr.status === 401 && attempt < 3) {
        if (await askForKey(sessionStorage.getItem(KEY_STORE) ? 'The server refused that key; enter it again.' : '')) return send(attempt + 1);
      }
      let j = {};
      try { j = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
      if (xhr.status < 200 || xhr.status >= 300) {
        return done('failed: ' + ((j.error && (j.error.message || j.error)) || 'HTTP ' + xhr.status), 'failed');
      }
      bar.value = 50;
      const id = docIdOf(j) || (j.documents && j.documents[0] && docIdOf(j.documents[0])) || file.name;
      row.dataset.documentId = id;
      status.textContent = 'ingesting';
      pollUploadStatus(j.index || index, id, bar, status, done);
    };
    xhr.send(form);
  };
  send(0);
}

async function pollUploadStatus(index, id, bar, status, done) {
  const started = Date.now();
  for (;;) {
    const res = await api('/upload-status?index=' + encodeURIComponent(index) + '&documentId=' + encodeURIComponent(id));
    if (res.ok) {
      const s = await res.json();
      if (s.failed) return done('failed: ' + (s.error || 'ingestion failed'), 'failed');
      if (s.completed) return done('done' + (s.chunks !== undefined ? ' (' + s.chunks + ' chunks)' : ''), 'done');
      const all = (s.steps || []).length;
      const left = (s.remaining_steps || s.remainingSteps || []).length;
      if (all) bar.value = 50 + Math.round((50 * (all - left)) / all);
      status.textContent = 'ingesting' + (all ? ' (' + (all - left) + '/' + all + ' steps)' : '');
    } else if (res.status !== 404 || Date.now() - started > 10000) {
      // 404 right after a 202 only means the pipeline is not registered yet.
      return done('failed: ' + (await errorText(res)), 'failed');
    }
    await new Promise((r) => setTimeout(r, 300));
  }
}

function partitionsOf(citation) { return citation.partitions || citation.Partitions || []; }

// "doc.md · part 3 · relevance 0.83"
function sourceLabel(c, p) {
  const parts = [docIdOf(c) || c.sourceName || c.link || 'source'];
  const n = p.partitionNumber !== undefined ? p.partitionNumber : p.partition_number;
  if (n !== undefined) parts.push('part ' + n);
  if (typeof p.relevance === 'number') parts.push('relevance ' + p.relevance.toFixed(3));
  return parts.join(' · ');
}

async function search(query) {
  const list = $('search-results');
  list.replaceChildren();
  try {
    const j = await apiJson('/search', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ index: memIndex(), query, limit: 5 }) });
    const items = [];
    for (const c of j.results || []) {
      for (const p of partitionsOf(c)) items.push(el('li', { class: 'result' }, el('div', { class: 'source', text: sourceLabel(c, p) }), el('div', { class: 'chunk', text: p.text || '' })));
    }
    if (!items.length) items.push(el('li', { class: 'empty', text: 'Nothing relevant found.' }));
    list.replaceChildren(...items);
  } catch (e) {
    showError($('mem-error'), e.message);
  }
}

async function ask(question) {
  const answer = $('ask-answer');
  const sources = $('ask-sources');
  answer.textContent = 'Thinking…';
  sources.replaceChildren();
  $('ask-button').disabled = true;
  kvView.busy(true);
  try {
    const j = await apiJson('/ask', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ index: memIndex(), question }) });
    answer.innerHTML = window.renderMarkdown(j.text || '');
    // Sources numbered [1], [2], ... in the order the model saw them; each opens its chunk.
    let n = 0;
    for (const c of j.relevantSources || []) {
      for (const p of partitionsOf(c)) {
        n++;
        const details = el('details', { id: 'source-' + n, class: 'chunk-text' }, el('summary', { text: 'chunk text' }), el('pre', { text: p.text || '' }));
        const link = el('a', { href: '#source-' + n, class: 'source-link', text: '[' + n + '] ' + sourceLabel(c, p), onclick: () => { details.open = true; } });
        sources.append(el('li', { class: 'source' }, link, details));
      }
    }
    linkCitations(answer, n);
    const usage = Array.isArray(j.tokenUsage) ? j.tokenUsage[0] : j.tokenUsage;
    const promptTokens = usage && (usage.promptTokens !== undefined ? usage.promptTokens : usage.tokenizerTokensIn);
    if (j.noResult) sources.append(el('li', { class: 'empty', text: 'No chunk passed the relevance threshold; the model was not asked.' }));
    else if (promptTokens !== undefined) sources.append(el('li', { class: 'meta', text: promptTokens + ' prompt tokens' }));
  } catch (e) {
    answer.textContent = '';
    showError($('mem-error'), e.message);
  } finally {
    $('ask-button').disabled = false;
    kvView.busy(false);
  }
}

// Turns "[k]" in the answer's text into links to source k (text nodes only, never markup).
function linkCitations(root, count) {
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  const nodes = [];
  while (walker.nextNode()) nodes.push(walker.currentNode);
  for (const node of nodes) {
    const parts = node.data.split(/(\[\d+\])/);
    if (parts.length === 1) continue;
    node.replaceWith(...parts.map((s) => {
      const k = /^\[(\d+)\]$/.exec(s);
      if (!k || Number(k[1]) < 1 || Number(k[1]) > count) return s;
      return el('a', { href: '#source-' + k[1], class: 'cite', text: s, onclick: () => { $('source-' + k[1]).open = true; } });
    }));
  }
}

// ---------------------------------------------------------------------------------------------
// KV view: /v1/kv and /metrics, polled every 250 ms while requests run (this page's or anyone's)
// and every second otherwise, while the page is visible.

const SEQ_COLORS = ['#2f7ed8', '#e4572e', '#17a398', '#a05195', '#f3a712', '#5c946e', '#d45087', '#7a5195'];
const KV_COLORS = { shared: '#1b3a5c', cached: '#8fb8de', reserved: '#f2e3b3', free: '#e8e8e8' };

const kvView = {
  timer: null,
  localBusy: 0,
  serverBusy: false,
  last: null,
  busy(on) {
    this.localBusy += on ? 1 : -1;
    this.poll();
  },
  schedule() {
    clearTimeout(this.timer);
    if (document.visibilityState !== 'visible') return;
    const fast = this.localBusy > 0 || this.serverBusy;
    this.timer = setTimeout(() => this.poll(), fast ? 250 : 1000);
  },
  async poll() {
    clearTimeout(this.timer);
    try {
      const [kvRes, metricsRes] = await Promise.all([api('/v1/kv'), api('/metrics')]);
      if (!kvRes.ok) throw new Error(await errorText(kvRes));
      const kv = await kvRes.json();
      const metrics = metricsRes.ok ? parseMetrics(await metricsRes.text()) : {};
      this.serverBusy = (kv.requests_running || 0) + (kv.requests_queued || 0) > 0;
      this.last = kv;
      renderKv(kv, metrics);
    } catch (e) {
      $('kv-summary').textContent = 'KV view unavailable: ' + e.message;
      $('kv-strip').textContent = '';
    }
    this.schedule();
  },
};

// Prometheus text -> { "name": value, "name{labels}": value }.
function parseMetrics(text) {
  const out = {};
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([^\s{]+(?:\{[^}]*\})?)\s+(\S+)/.exec(line);
    if (m) out[m[1]] = Number(m[2]);
  }
  return out;
}

function renderKv(kv, metrics) {
  const c = kv.cache || {};
  const seqs = kv.sequences || [];
  $('kv-strip').textContent = 'KV ' + (c.cells_total - c.cells_free) + '/' + c.cells_total + ' cells · ' + (kv.requests_running || 0) + ' running · ' + (kv.requests_queued || 0) + ' queued';
  const stat = (id, label, value) => el('span', { class: 'stat', id }, el('b', { text: String(value) }), ' ' + label);
  $('kv-summary').replaceChildren(
    stat('kv-total', 'cells', c.cells_total), stat('kv-used', 'used by sequences', c.cells_used), stat('kv-shared', 'shared prefix', c.cells_shared),
    stat('kv-cached', 'prefix cache', c.cells_cached), stat('kv-reserved', 'reserved', c.cells_reserved), stat('kv-free', 'free', c.cells_free),
    stat('kv-running', 'running', kv.requests_running || 0), stat('kv-queued', 'queued', kv.requests_queued || 0));

  // Segments in drawing order, each cell drawn once: cells a sequence shares with another
  // holder (another sequence or the prefix cache: a reused prompt prefix); each sequence's
  // own cells; cells only the prefix cache holds; reserved (promised to admitted
  // requests, still free); free. used + cached counts a shared cached cell twice, so the
  // cache-only part is what neither the sequences nor the free list account for.
  const total = c.cells_total || 0;
  const free = c.cells_free || 0;
  const used = c.cells_used || 0;
  const segments = [];
  let own = 0;
  seqs.forEach((s, i) => {
    const n = Math.max(0, (s.cells || 0) - (s.shared_cells || 0));
    own += n;
    segments.push({ n, color: SEQ_COLORS[i % SEQ_COLORS.length], label: 'seq ' + s.id + ' (' + (s.state || '') + ')' });
  });
  const reserved = Math.min(c.cells_reserved || 0, free);
  segments.unshift({ n: Math.max(0, used - own), color: KV_COLORS.shared, label: 'shared prefix' });
  segments.push({ n: Math.max(0, total - free - used), color: KV_COLORS.cached, label: 'prefix cache only' });
  segments.push({ n: reserved, color: KV_COLORS.reserved, label: 'reserved' });
  segments.push({ n: free - reserved, color: KV_COLORS.free, label: 'free, not reserved' });
  drawCells($('kv-canvas'), total, segments);
  $('kv-legend').replaceChildren(...segments.filter((s) => s.n > 0 || s.label.startsWith('free')).map((s) =>
    el('li', {}, el('span', { class: 'swatch', style: 'background:' + s.color }), s.label + ': ' + s.n)));

  $('kv-sequences').tBodies[0].replaceChildren(...seqs.map((s, i) => el('tr', {},
    el('td', {}, el('span', { class: 'swatch', style: 'background:' + SEQ_COLORS[i % SEQ_COLORS.length] }), String(s.id)),
    ...[s.request_id || '', s.state || '', s.cells, s.shared_cells, s.reserved_cells, s.prompt_tokens, s.generated_tokens,
      typeof s.age_ms === 'number' ? s.age_ms.toFixed(0) : ''].map((v) => el('td', { text: v === undefined || v === null ? '' : String(v) })))));
  $('kv-queue').tBodies[0].replaceChildren(...(kv.queued || []).map((q) => el('tr', {},
    el('td', { text: q.request_id || '' }), el('td', { text: String(q.prompt_tokens) }), el('td', { text: Number(q.age_ms || 0).toFixed(0) }))));

  const rows = [];
  for (const [k, v] of Object.entries(metrics)) {
    if (/^kvrag_(requests_(submitted|ended)_total|generated_tokens_total|prompt_tokens_total|prefix_cache_hit_tokens_total|decode_tokens_per_second|rejections_total)/.test(k) && v !== 0) {
      rows.push(el('dt', { text: k.replace(/^kvrag_/, '') }), el('dd', { text: Number.isInteger(v) ? String(v) : v.toFixed(1) }));
    }
  }
  $('kv-metrics').replaceChildren(...rows);
}

// One square per cell (or per group of cells on a large cache), filled in segment order.
function drawCells(canvas, total, segments) {
  const ctx = canvas.getContext('2d');
  const width = canvas.width;
  if (total <= 0) return ctx.clearRect(0, 0, width, canvas.height);
  let size = 12;
  let perSquare = 1;
  while (size > 3 && Math.ceil(total / Math.floor(width / size)) * size > 400) size--;
  const cols = Math.floor(width / size);
  while (Math.ceil(total / perSquare / cols) * size > 400) perSquare *= 2;
  const squares = Math.ceil(total / perSquare);
  canvas.height = Math.ceil(squares / cols) * size;
  ctx.clearRect(0, 0, width, canvas.height);
  let at = 0;
  for (const seg of segments) {
    const n = Math.round(seg.n / perSquare);
    ctx.fillStyle = seg.color;
    for (let i = 0; i < n && at < squares; i++, at++) {
      ctx.fillRect((at % cols) * size, Math.floor(at / cols) * size, size - 1, size - 1);
    }
  }
  canvas.title = perSquare > 1 ? 'one square = ' + perSquare + ' cells' : 'one square = one cell';
}

// ---------------------------------------------------------------------------------------------
// Wiring

function wire() {
  for (const tab of document.querySelectorAll('[role=tab]')) tab.addEventListener('click', () => showTab(tab.dataset.tab));
  $('chat-form').addEventListener('submit', (e) => { e.preventDefault(); sendChat(); });
  $('prompt').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); sendChat(); }
  });
  $('stop').addEventListener('click', () => { if (chat.controller) chat.controller.abort(); });
  $('new-chat').addEventListener('click', newChat);
  $('key-form').addEventListener('submit', () => {});

  const zone = $('drop-zone');
  zone.addEventListener('dragover', (e) => { e.preventDefault(); zone.classList.add('over'); });
  zone.addEventListener('dragleave', () => zone.classList.remove('over'));
  zone.addEventListener('drop', (e) => {
    e.preventDefault();
    zone.classList.remove('over');
    for (const f of e.dataTransfer.files) uploadFile(f);
  });
  $('file-input').addEventListener('change', (e) => {
    for (const f of e.target.files) uploadFile(f);
    e.target.value = '';
  });
  $('refresh-docs').addEventListener('click', refreshDocuments);
  $('mem-index').addEventListener('change', refreshDocuments);
  $('search-form').addEventListener('submit', (e) => { e.preventDefault(); if ($('search-query').value.trim()) search($('search-query').value.trim()); });
  $('ask-form').addEventListener('submit', (e) => { e.preventDefault(); if ($('ask-question').value.trim()) ask($('ask-question').value.trim()); });
  document.addEventListener('visibilitychange', () => kvView.poll());
}

// /health needs no key: waits while the model loads (503 "loading"), says so, and reports a
// server that failed to start.
async function waitUntilReady() {
  for (;;) {
    let res;
    try {
      res = await fetch(BASE + '/health');
    } catch (e) {
      $('server-status').textContent = 'server unreachable; retrying';
      await new Promise((r) => setTimeout(r, 1000));
      continue;
    }
    const j = await res.json().catch(() => ({}));
    if (res.ok) return;
    if (j.status === 'error') {
      $('server-status').textContent = 'server failed';
      showError($('chat-error'), 'The server failed to start: ' + (j.message || 'HTTP ' + res.status));
      return;
    }
    $('server-status').textContent = 'loading the model…';
    await new Promise((r) => setTimeout(r, 500));
  }
}

async function start() {
  wire();
  await waitUntilReady();
  // The first call may ask for the key; the others wait for it instead of asking again.
  await loadModels();
  await probeMemory().catch((e) => showError($('mem-error'), e.message));
  kvView.poll();
  document.body.dataset.ready = 'true';
}

start();
