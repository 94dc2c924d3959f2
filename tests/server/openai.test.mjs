// `kvrag serve` driven by the official `openai` npm client: completions, chat (plain and
// streamed), embeddings, models, errors and API keys; structured output with a zod schema,
// a tool-calling round trip, a tool call cut off by max_tokens, logprobs, n = 2. Run by ctest
// as `node --test` with KVRAG_BINARY set; starts its own server on a free loopback port and
// stops it with SIGTERM.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { LengthFinishReasonError } from 'openai/error';
import { zodResponseFormat } from 'openai/helpers/zod';
import { z } from 'zod';

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

test('chat.completions.parse with a zod schema: every finished answer parses', { timeout: 60000 }, async () => {
  const Person = z.object({
    // No .max(): zod counts UTF-16 units, JSON Schema's maxLength (and the grammar) code points.
    name: z.string(),
    age: z.number().int().min(0).max(120),
    kind: z.enum(['a', 'b']),
    tags: z.array(z.string().max(4)).max(2),
  });
  // The random-weights model closes the unbounded `name` string only by chance: over 200 seeds
  // about 60% of answers finished within 400 tokens, whether every step was masked or not
  // (session 5). An answer cut by max_tokens cannot parse, and the client says so; every
  // finished one must parse.
  let parsed = 0;
  for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
    const request = {
      model: 'tiny',
      messages: [{ role: 'user', content: 'Describe someone.' }],
      max_tokens: 400,
      seed,
      response_format: zodResponseFormat(Person, 'person'),
    };
    let r;
    try {
      r = await client.chat.completions.parse(request);
    } catch (e) {
      assert.ok(e instanceof LengthFinishReasonError, String(e));
      const cut = await client.chat.completions.create(request);
      assert.equal(cut.choices[0].finish_reason, 'length');
      assert.equal(cut.usage.completion_tokens, 400);
      continue;
    }
    parsed += 1;
    const msg = r.choices[0].message;
    assert.equal(r.choices[0].finish_reason, 'stop', msg.content);
    // parse() ran the zod schema on the content; check the values again here.
    const p = msg.parsed;
    assert.ok(p, 'parsed is set');
    assert.equal(Person.safeParse(p).success, true, msg.content);
    assert.ok(Number.isInteger(p.age) && p.age >= 0 && p.age <= 120, msg.content);
  }
  assert.ok(parsed >= 3, `${parsed} of 8 answers finished`);
});

test('tool calling round trip: a forced call, its result, the answer', { timeout: 60000 }, async () => {
  const tools = [{
    type: 'function',
    function: {
      name: 'get_weather',
      description: 'Weather for a city',
      parameters: { type: 'object', properties: { city: { type: 'string', maxLength: 12 }, days: { type: 'integer', minimum: 1, maximum: 7 } }, required: ['city', 'days'], additionalProperties: false },
    },
  }];
  const messages = [{ role: 'user', content: 'Weather in Oslo for two days?' }];
  const first = await client.chat.completions.create({ model: 'tiny', messages, tools, tool_choice: 'required', max_tokens: 300, seed: 4 });
  assert.equal(first.choices[0].finish_reason, 'tool_calls');
  const call = first.choices[0].message.tool_calls[0];
  assert.equal(call.type, 'function');
  assert.equal(call.function.name, 'get_weather');
  const args = JSON.parse(call.function.arguments);
  assert.equal(typeof args.city, 'string');
  assert.ok(Number.isInteger(args.days) && args.days >= 1 && args.days <= 7, call.function.arguments);

  // Streamed, the same request ends with the call as tool_calls deltas: the first with the
  // id and name, then the arguments in pieces, which a client concatenates.
  const stream = await client.chat.completions.create({ model: 'tiny', messages, tools, tool_choice: 'required', max_tokens: 300, seed: 4, stream: true });
  let streamed;
  let finish;
  let argDeltas = 0;
  for await (const chunk of stream) {
    const tc = chunk.choices[0]?.delta?.tool_calls;
    if (tc && tc[0].id) {
      streamed = { ...tc[0], function: { ...tc[0].function } };
    } else if (tc) {
      streamed.function.arguments += tc[0].function.arguments;
      argDeltas += 1;
    }
    if (chunk.choices[0]?.finish_reason) finish = chunk.choices[0].finish_reason;
  }
  assert.equal(finish, 'tool_calls');
  assert.ok(argDeltas > 1, `arguments in ${argDeltas} deltas`);
  assert.equal(streamed.function.name, 'get_weather');
  JSON.parse(streamed.function.arguments);

  messages.push(first.choices[0].message);
  messages.push({ role: 'tool', tool_call_id: call.id, content: JSON.stringify({ temp_c: 4 }) });
  const answer = await client.chat.completions.create({ model: 'tiny', messages, tools, max_tokens: 8, temperature: 0 });
  assert.equal(typeof answer.choices[0].message.content, 'string');
  assert.ok(answer.usage.prompt_tokens > first.usage.prompt_tokens, 'the call and its result are in the prompt');
});

test('tool calls stream as they are written, through the client\'s streaming helper', { timeout: 60000 }, async () => {
  const tools = [{
    type: 'function',
    function: {
      name: 'get_weather',
      description: 'Weather for a city',
      strict: true,
      parameters: { type: 'object', properties: { city: { type: 'string', maxLength: 12 }, days: { type: 'integer', minimum: 1, maximum: 7 } }, required: ['city', 'days'], additionalProperties: false },
    },
  }];
  const request = {
    model: 'tiny', messages: [{ role: 'user', content: 'Weather in Bergen?' }], tools,
    tool_choice: { type: 'function', function: { name: 'get_weather' } }, max_tokens: 300, seed: 11,
  };
  const plain = await client.chat.completions.create(request);
  const expected = plain.choices[0].message.tool_calls[0].function.arguments;

  const stream = client.chat.completions.stream(request);
  const deltas = [];
  let done;
  stream.on('tool_calls.function.arguments.delta', (e) => {
    assert.equal(e.name, 'get_weather', 'the name comes in the call\'s first delta');
    if (e.arguments_delta) deltas.push(e.arguments_delta);
  });
  stream.on('tool_calls.function.arguments.done', (e) => { done = e; });
  const final = await stream.finalChatCompletion();
  assert.equal(final.choices[0].finish_reason, 'tool_calls');
  const call = final.choices[0].message.tool_calls[0];
  assert.match(call.id, /^call_/);
  assert.equal(call.function.name, 'get_weather');
  // The arguments arrive a token at a time, and add up to what the plain request answers.
  assert.ok(deltas.length > 3, `arguments in ${deltas.length} deltas`);
  assert.equal(deltas.join(''), expected);
  assert.equal(call.function.arguments, expected);
  // strict: the helper parses the finished arguments; the grammar kept them to the schema.
  assert.ok(done, 'arguments.done event');
  assert.equal(typeof done.parsed_arguments.city, 'string');
  assert.ok(Number.isInteger(done.parsed_arguments.days) && done.parsed_arguments.days >= 1 && done.parsed_arguments.days <= 7, expected);
});

test('logprobs with top_logprobs', { timeout: 30000 }, async () => {
  const r = await client.chat.completions.create({
    model: 'tiny', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 6, temperature: 0, ignore_eos: true, logprobs: true, top_logprobs: 2,
  });
  const content = r.choices[0].logprobs.content;
  assert.equal(content.length, r.usage.completion_tokens);
  for (const e of content) {
    assert.ok(e.logprob <= 0);
    assert.equal(e.top_logprobs.length, 2);
    assert.equal(e.top_logprobs[0].token, e.token, 'greedy picks the likeliest');
    assert.ok(e.top_logprobs[0].logprob >= e.top_logprobs[1].logprob);
  }
  for (const e of content) assert.ok(Array.isArray(e.bytes) && e.bytes.length > 0);
});

test('n = 2: two choices with their own seeds', { timeout: 30000 }, async () => {
  const r = await client.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: 'Two answers please.' }], max_tokens: 5, n: 2, seed: 7, ignore_eos: true });
  assert.equal(r.choices.length, 2);
  assert.deepEqual(r.choices.map((c) => c.index), [0, 1]);
  for (const c of r.choices) {
    assert.equal(c.message.role, 'assistant');
    assert.equal(typeof c.message.content, 'string');
    assert.equal(c.finish_reason, 'length');
  }
  assert.equal(r.usage.completion_tokens, 10);
  // The second choice is what n = 1 gives with the next seed.
  const one = await client.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: 'Two answers please.' }], max_tokens: 5, seed: 8, ignore_eos: true });
  assert.equal(one.choices[0].message.content, r.choices[1].message.content);

  // Streamed: chunks carry one choice each, by index; each index finishes on its own; the
  // texts are the non-streamed ones; usage (asked for) counts both.
  const stream = await client.chat.completions.create({
    model: 'tiny', messages: [{ role: 'user', content: 'Two answers please.' }], max_tokens: 5, n: 2, seed: 7, ignore_eos: true,
    stream: true, stream_options: { include_usage: true },
  });
  const content = ['', ''];
  const finish = [null, null];
  let usage;
  for await (const chunk of stream) {
    for (const c of chunk.choices) {
      content[c.index] += c.delta?.content ?? '';
      if (c.finish_reason) finish[c.index] = c.finish_reason;
    }
    if (chunk.usage) usage = chunk.usage;
  }
  assert.deepEqual(content, r.choices.map((c) => c.message.content));
  assert.deepEqual(finish, ['length', 'length']);
  assert.equal(usage.completion_tokens, 10);
});

test('a tool call cut off by max_tokens: finish_reason length, and no call with broken arguments', { timeout: 60000 }, async () => {
  const tools = [{
    type: 'function',
    function: {
      name: 'get_weather',
      strict: true,
      parameters: { type: 'object', properties: { city: { type: 'string', maxLength: 12 }, days: { type: 'integer', minimum: 1, maximum: 7 } }, required: ['city', 'days'], additionalProperties: false },
    },
  }];
  const request = {
    model: 'tiny', messages: [{ role: 'user', content: 'Weather in Lyon?' }], tools,
    tool_choice: { type: 'function', function: { name: 'get_weather' } }, temperature: 0,
  };
  const whole = await client.chat.completions.create({ ...request, max_tokens: 300 });
  assert.equal(whole.choices[0].finish_reason, 'tool_calls');
  const n = whole.usage.completion_tokens;
  // Greedy: max_tokens k cuts the same answer at its k-th token. Find a cut inside the
  // arguments (the response's content holds the call's name and the arguments key).
  let k = n - 1;
  let cut;
  for (; k > 0; k -= 1) {
    cut = await client.chat.completions.create({ ...request, max_tokens: k });
    assert.equal(cut.choices[0].finish_reason, 'length');
    if (!cut.choices[0].message.tool_calls && /"arguments"\s*:\s*\{/.test(cut.choices[0].message.content)) break;
  }
  assert.ok(k > 0, 'some max_tokens cuts the call inside its arguments');
  // Not streamed: the cut call is content, as written; no tool_calls entry to JSON.parse.
  assert.equal(cut.choices[0].message.tool_calls, undefined);
  assert.match(cut.choices[0].message.content, /^<tool_call>/);
  assert.equal(cut.usage.completion_tokens, k);

  // Streamed: the call's name and arguments so far came as deltas; the final chunk says
  // "length", which the client's helper turns into LengthFinishReasonError (strict tools are
  // auto-parsed) before it would parse the cut arguments.
  const stream = client.chat.completions.stream({ ...request, max_tokens: k });
  let args = '';
  stream.on('tool_calls.function.arguments.delta', (e) => {
    assert.equal(e.name, 'get_weather');
    args += e.arguments_delta;
  });
  await assert.rejects(stream.finalChatCompletion(), (e) => e instanceof LengthFinishReasonError);
  const wholeArgs = whole.choices[0].message.tool_calls[0].function.arguments;
  assert.ok(args.length > 0 && args.length < wholeArgs.length && wholeArgs.startsWith(args), `${args} begins ${wholeArgs}`);

  // The plain streaming interface: the same deltas, then finish_reason "length".
  const raw = await client.chat.completions.create({ ...request, max_tokens: k, stream: true });
  let rawArgs = '';
  let finish;
  for await (const chunk of raw) {
    const tc = chunk.choices[0]?.delta?.tool_calls;
    if (tc) rawArgs += tc[0].function.arguments ?? '';
    if (chunk.choices[0]?.finish_reason) finish = chunk.choices[0].finish_reason;
  }
  assert.equal(finish, 'length');
  assert.equal(rawArgs, args);
});
