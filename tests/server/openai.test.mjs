// `kvrag serve` driven by the official `openai` npm client: completions, chat (plain and
// streamed), embeddings, models, errors and API keys. Run by ctest as `node --test` with
// KVRAG_BINARY set; starts its own server on a free loopback port and stops it with SIGTERM.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';

const BINARY = process.env.KVRAG_BINARY;
const KEY = 'node-test-key';
let dir;
let server;
let serverLog = '';
let client;

// Starts `kvrag serve --port 0` and resolves with the port once it logs "ready" (bounded).
function startServer(args) {
  return new Promise((resolve, reject) => {
    const proc = spawn(BINARY, ['serve', '--port', '0', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let port = 0;
    const timer = setTimeout(() => reject(new Error('server did not start in 20 s:\n' + serverLog)), 20000);
    proc.stderr.on('data', (data) => {
      serverLog += data.toString();
      const m = serverLog.match(/listening on http:\/\/127\.0\.0\.1:(\d+)/);
      if (m) port = Number(m[1]);
      if (port && serverLog.includes('kvrag serve: ready')) {
        clearTimeout(timer);
        resolve({ proc, port });
      }
    });
    proc.on('exit', (code) => {
      clearTimeout(timer);
      if (!port || !serverLog.includes('kvrag serve: ready')) reject(new Error(`server exited with ${code}:\n` + serverLog));
    });
  });
}

before(async () => {
  assert.ok(BINARY, 'set KVRAG_BINARY to the kvrag executable');
  dir = mkdtempSync(join(tmpdir(), 'kvrag-node-'));
  const model = join(dir, 'tiny.gguf');
  const mk = spawnSync(BINARY, ['make-model', '-o', model, '--type', 'f32'], { encoding: 'utf8' });
  assert.equal(mk.status, 0, mk.stderr);
  server = await startServer(['-m', model, '--api-key', KEY, '--parallel', '4', '-t', '2']);
  client = new OpenAI({ baseURL: `http://127.0.0.1:${server.port}/v1`, apiKey: KEY, maxRetries: 0, timeout: 30000 });
});

after(async () => {
  if (server) {
    const exited = new Promise((resolve) => server.proc.on('exit', (code) => resolve(code)));
    server.proc.kill('SIGTERM');
    let timer;
    const code = await Promise.race([exited, new Promise((r) => { timer = setTimeout(() => r('timeout'), 15000); })]);
    clearTimeout(timer);
    if (code === 'timeout') server.proc.kill('SIGKILL');
    assert.equal(code, 0, 'server exit code after SIGTERM\n' + serverLog);
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('models.list names the served model', { timeout: 30000 }, async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.deepEqual(ids, ['tiny']);
});

test('completions: greedy text, usage and finish_reason', { timeout: 30000 }, async () => {
  const a = await client.completions.create({ model: 'tiny', prompt: 'Once upon a time', max_tokens: 10, temperature: 0, ignore_eos: true });
  assert.equal(a.object, 'text_completion');
  assert.equal(a.choices.length, 1);
  assert.equal(a.choices[0].finish_reason, 'length');
  assert.equal(a.usage.completion_tokens, 10);
  assert.equal(a.usage.total_tokens, a.usage.prompt_tokens + 10);
  const b = await client.completions.create({ model: 'tiny', prompt: 'Once upon a time', max_tokens: 10, temperature: 0, ignore_eos: true });
  assert.equal(b.choices[0].text, a.choices[0].text, 'greedy is deterministic');

  // Streamed completion: same text, usage on the final chunk.
  const stream = await client.completions.create({ model: 'tiny', prompt: 'Once upon a time', max_tokens: 10, temperature: 0, ignore_eos: true, stream: true });
  let text = '';
  let last;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.text ?? '';
    last = chunk;
  }
  assert.equal(text, a.choices[0].text);
  assert.equal(last.choices[0].finish_reason, 'length');
  assert.equal(last.usage.completion_tokens, 10);
});

test('chat completions: plain and streamed agree', { timeout: 30000 }, async () => {
  const messages = [
    { role: 'system', content: 'You are terse.' },
    { role: 'user', content: 'Say something.' },
  ];
  const plain = await client.chat.completions.create({ model: 'tiny', messages, max_tokens: 12, temperature: 0, seed: 1, ignore_eos: true });
  assert.equal(plain.object, 'chat.completion');
  assert.equal(plain.choices[0].message.role, 'assistant');
  assert.equal(typeof plain.choices[0].message.content, 'string');
  assert.equal(plain.choices[0].finish_reason, 'length');
  assert.equal(plain.usage.completion_tokens, 12);

  const stream = await client.chat.completions.create({ model: 'tiny', messages, max_tokens: 12, temperature: 0, seed: 1, ignore_eos: true, stream: true });
  let content = '';
  let role;
  let finish;
  let usage;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    const d = chunk.choices[0]?.delta ?? {};
    if (d.role) role = d.role;
    content += d.content ?? '';
    if (chunk.choices[0]?.finish_reason) finish = chunk.choices[0].finish_reason;
    if (chunk.usage) usage = chunk.usage;
  }
  assert.equal(role, 'assistant');
  assert.equal(content, plain.choices[0].message.content);
  assert.equal(finish, 'length');
  assert.equal(usage.completion_tokens, 12);
});

test('embeddings: string and list, float and base64, unit length', { timeout: 30000 }, async () => {
  // The client asks for base64 by default and decodes it itself.
  const one = await client.embeddings.create({ model: 'tiny', input: 'a small red fox' });
  assert.equal(one.data.length, 1);
  const v = one.data[0].embedding;
  assert.equal(v.length, 64);
  const norm = Math.sqrt(v.reduce((s, x) => s + x * x, 0));
  assert.ok(Math.abs(norm - 1) < 1e-4, `norm ${norm}`);

  const many = await client.embeddings.create({ model: 'tiny', input: ['a small red fox', 'tea'], encoding_format: 'float' });
  assert.equal(many.data.length, 2);
  assert.equal(many.data[1].index, 1);
  const w = many.data[0].embedding;
  for (let i = 0; i < v.length; i++) assert.ok(Math.abs(v[i] - w[i]) < 1e-6, 'base64 and float agree');
  assert.ok(many.usage.prompt_tokens > 0);
});

test('errors come back as OpenAI API errors', { timeout: 30000 }, async () => {
  await assert.rejects(
    client.completions.create({ model: 'tiny', prompt: 'x', max_tokens: -1 }),
    (e) => e instanceof OpenAI.BadRequestError && e.status === 400 && /max_tokens/.test(e.message),
  );
  // Any model name is answered by the served model, which the response names.
  const other = await client.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x' }], max_tokens: 2 });
  assert.equal(other.model, 'tiny');
  const wrongKey = new OpenAI({ baseURL: `http://127.0.0.1:${server.port}/v1`, apiKey: 'wrong', maxRetries: 0, timeout: 30000 });
  await assert.rejects(wrongKey.models.list(), (e) => e instanceof OpenAI.AuthenticationError && e.status === 401);
  // Still serving.
  const ok = await client.completions.create({ model: 'tiny', prompt: 'still', max_tokens: 2, temperature: 0 });
  assert.equal(ok.choices.length, 1);
});
