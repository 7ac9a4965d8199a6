// test_hostile: every hostile input we could think of, each answered with the right status and
// a clear message in OpenAI's error shape, and the server still serving afterwards: malformed,
// truncated and non-object JSON, wrong types, negative and huge numbers, empty prompts, prompts
// over the context, a 50 MB body (declared and chunked), 10,000 headers, invalid UTF-8, unknown
// models and routes, bad keys, path tricks, wrong methods and content types, garbage instead
// of HTTP. Never a 500, never a crash; the server exits 0 on SIGTERM.
import { args, call, checker, metrics, raw, startServer } from './harness.mjs';

const a = args();
const t = checker('test_hostile');
const KEY = 'sk-hostile';
const srv = await startServer(a, ['--api-key', KEY, '--max-num-seqs', '8'], { quiet: true });
const { url, port } = srv;

// A POST whose answer must be `status` with an OpenAI error whose message matches re.
async function expectError(what, body, status, re, { path = '/v1/completions', headers = {}, key = KEY, param } = {}) {
  const r = await call(url, path, { body, headers, key });
  const e = r.json?.error;
  const shaped = e && typeof e.message === 'string' && e.code === status && typeof e.type === 'string' &&
    'param' in e;
  t.ok(r.status === status && shaped && re.test(e.message) && (param === undefined || e.param === param),
    what, `status ${r.status}, body ${r.text.slice(0, 300)}`);
}

const ok = { prompt: 'hello', max_tokens: 2 };
const chat = (m) => ({ messages: m, max_tokens: 2 });
try {
  // ---- JSON ----
  await expectError('malformed JSON', '{"prompt": "a",, }', 400, /not valid JSON/);
  await expectError('truncated JSON', '{"prompt": "a", "max_tokens": 1', 400, /not valid JSON/);
  await expectError('empty body', '', 400, /not valid JSON/);
  await expectError('a JSON array instead of an object', '[1, 2, 3]', 400, /must be a JSON object/);
  await expectError('JSON null', 'null', 400, /must be a JSON object/);
  await expectError('nested 100,000 deep', '['.repeat(100000) + ']'.repeat(100000), 400, /not valid JSON/);
  await expectError('trailing garbage', '{"prompt":"a"} xyz', 400, /not valid JSON/);

  // ---- types and ranges ----
  await expectError('max_tokens as a string', { ...ok, max_tokens: 'ten' }, 400, /max_tokens must be an integer/, { param: 'max_tokens' });
  await expectError('temperature as a string', { ...ok, temperature: 'hot' }, 400, /temperature must be a number/, { param: 'temperature' });
  await expectError('prompt as a number', { prompt: 12.5 }, 400, /prompt must be a string/, { param: 'prompt' });
  await expectError('prompt as an object', { prompt: { a: 1 } }, 400, /prompt must be/, { param: 'prompt' });
  await expectError('messages as a string', chat('hi'), 400, /messages must be a non-empty array/, { path: '/v1/chat/completions' });
  await expectError('a message without role', chat([{ content: 'x' }]), 400, /role/, { path: '/v1/chat/completions' });
  await expectError('content as a number', chat([{ role: 'user', content: 7 }]), 400, /content must be a string/, { path: '/v1/chat/completions' });
  await expectError('stop as a number', { ...ok, stop: 5 }, 400, /stop must be a string/);
  await expectError('n as a boolean', { ...ok, n: true }, 400, /n must be an integer/);
  await expectError('stream as a string', { ...ok, stream: 'yes' }, 400, /stream must be true or false/);
  await expectError('negative max_tokens', { ...ok, max_tokens: -1 }, 400, /max_tokens must be at least 1, got -1/);
  await expectError('negative temperature', { ...ok, temperature: -0.5 }, 400, /non-negative/);
  await expectError('negative n', { ...ok, n: -3 }, 400, /n must be at least 1/);
  await expectError('top_p 0', { ...ok, top_p: 0 }, 400, /top_p must be in \(0, 1\]/);
  await expectError('top_k -5', { ...ok, top_k: -5 }, 400, /top_k/);
  await expectError('negative logprobs', { ...ok, logprobs: -1 }, 400, /logprobs must be non-negative/);
  await expectError('huge max_tokens (1e30)', { ...ok, max_tokens: 1e30 }, 400, /max_tokens must be an integer/);
  await expectError('max_tokens past int64', '{"prompt":"a","max_tokens":123456789012345678901234567890}', 400, /not valid JSON/);
  await expectError('huge max_tokens within int64', { ...ok, max_tokens: 9007199254740991 }, 400, /maximum context length is 512 tokens/);
  await expectError('huge n', { ...ok, n: 1000000 }, 400, /n must be at most/);
  await expectError('huge top_logprobs', { messages: [{ role: 'user', content: 'x' }], logprobs: true, top_logprobs: 1000 }, 400, /top_logprobs must be in \[0, 20\]/, { path: '/v1/chat/completions' });
  await expectError('1e400 overflows', '{"prompt":"a","temperature":1e400}', 400, /not valid JSON/);
  await expectError('a token id past the vocabulary', { prompt: [1, 2, 999999999] }, 400, /token id must be an integer in \[0, 151936\)/);
  await expectError('a negative token id', { prompt: [-1] }, 400, /token id/);
  await expectError('too many stop strings', { ...ok, stop: Array.from({ length: 17 }, (_, i) => `s${i}`) }, 400, /at most 16 stop strings/);
  await expectError('a stop string too long', { ...ok, stop: ['x'.repeat(300)] }, 400, /at most 256 bytes/);
  await expectError('n x prompts over the cap', { prompt: Array(10).fill('a'), n: 2, max_tokens: 1 }, 400, /at most 16/);

  // ---- empty and over-long prompts ----
  await expectError('empty prompt', { prompt: '' }, 400, /prompt must not be empty/);
  await expectError('empty prompt list', { prompt: [] }, 400, /empty array/);
  await expectError('empty messages', chat([]), 400, /non-empty array/, { path: '/v1/chat/completions' });
  await expectError('a prompt over the context', { prompt: 'word '.repeat(2000), max_tokens: 16 }, 400,
    /^This model's maximum context length is 512 tokens\. However, you requested \d+ tokens \(\d+ in the messages, 16 in the completion\)\. Please reduce the length of the messages or completion\.$/);
  await expectError('a prompt of ids over the context', { prompt: Array(600).fill(5) }, 400,
    /However, you requested 616 tokens \(600 in the messages, 16 in the completion\)/);
  await expectError('prompt + max_tokens over the context', { prompt: 'hello', max_tokens: 512 }, 400,
    /requested 513 tokens \(1 in the messages, 512 in the completion\)/);

  // ---- text encodings ----
  const badUtf8 = Buffer.concat([Buffer.from('{"prompt":"ab'), Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from('","max_tokens":2}')]);
  await expectError('invalid UTF-8 in a string', badUtf8, 400, /not valid JSON/);
  await expectError('a lone surrogate escape', '{"prompt":"\\ud800x"}', 400, /not valid JSON/);
  await expectError('a NUL escape', '{"prompt":"a\\u0000b"}', 400, /not valid JSON/);
  const overlong = Buffer.concat([Buffer.from('{"prompt":"'), Buffer.from([0xc0, 0xaf]), Buffer.from('"}')]);
  await expectError('an overlong UTF-8 encoding', overlong, 400, /not valid JSON/);

  // ---- models, keys, routes, methods ----
  await expectError('unknown model', { ...ok, model: 'gpt-5' }, 404, /The model `gpt-5` does not exist/, { param: 'model' });
  await expectError('unknown model in chat', { ...chat([{ role: 'user', content: 'x' }]), model: '../../etc' }, 404, /does not exist/, { path: '/v1/chat/completions' });
  await expectError('wrong key', ok, 401, /API key/, { key: 'sk-nope' });
  await expectError('a key differing in its last byte', ok, 401, /API key/, { key: KEY.slice(0, -1) + 'X' });
  await expectError('a key with a suffix', ok, 401, /API key/, { key: KEY + 'x' });
  await expectError('no key', ok, 401, /API key/, { key: '' });
  await expectError('Basic instead of Bearer', ok, 401, /API key/, { key: '', headers: { Authorization: `Basic ${KEY}` } });
  const noKeyMetrics = await call(url, '/metrics', { method: 'GET' });
  t.ok(noKeyMetrics.status === 401, '/metrics needs the key');
  t.ok((await call(url, '/health', { method: 'GET' })).status === 200, '/health needs no key');
  await expectError('unknown route', ok, 404, /Not Found: POST \/v1\/frobnicate/, { path: '/v1/frobnicate' });
  const get = await call(url, '/v1/completions', { method: 'GET', key: KEY });
  t.ok(get.status === 405 && get.headers.get('allow') === 'POST' && get.json?.error?.code === 405,
    'GET on a POST route is 405 with Allow', get.text);
  const postHealth = await call(url, '/health', { body: {}, key: KEY });
  t.ok(postHealth.status === 405, 'POST /health is 405');
  await expectError('text/plain body', JSON.stringify(ok), 415, /Content-Type must be application\/json/, { headers: { 'Content-Type': 'text/plain' } });
  await expectError('form body', 'prompt=hi', 415, /Content-Type/, { headers: { 'Content-Type': 'application/x-www-form-urlencoded' } });
  await expectError('a tools request', { messages: [{ role: 'user', content: 'x' }], tools: [{ type: 'function', function: { name: 'f' } }] }, 400, /tools is not supported/, { path: '/v1/chat/completions' });
  await expectError('an image part', { messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'http://x' } }] }] }, 400, /only \{"type": "text"/, { path: '/v1/chat/completions' });

  // ---- path tricks: normalised, never a file ----
  const req = (p, extra = '') => `GET ${p} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${KEY}\r\nConnection: close\r\n${extra}\r\n`;
  for (const p of ['/../../etc/passwd', '/v1/../../../etc/passwd', '/%2e%2e/%2e%2e/etc/passwd', '/etc/passwd%00',
    '/v1/models/../../../../etc/shadow', '//etc//passwd', '/v1/models%00', '/./health/../../proc/self/environ',
    '/CMakeLists.txt', '/v1/completions/../../README.md', '/\\..\\..\\etc\\passwd']) {
    const r = await raw(port, req(p));
    t.ok(r.status === 404 && !/root:|PATH=|cmake_minimum/.test(r.body) && /"error"/.test(r.body), `path trick ${p} is 404`,
      `status ${r.status} body ${r.body.slice(0, 200)}`);
  }
  const norm = await raw(port, req('/v1/../v1/models'));
  t.ok(norm.status === 200 && /"object":"list"/.test(norm.body), '/v1/../v1/models is normalised to /v1/models');
  const normAuth = await raw(port, `GET /v1/../metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
  t.ok(normAuth.status === 401, 'a normalised path still needs the key');
  const unknownModelPath = await raw(port, req('/v1/models/%2e%2e%2fetc'));
  t.ok(unknownModelPath.status === 404, '/v1/models/<dots> is an unknown model');

  // ---- HTTP itself ----
  const garbage = await raw(port, 'garbage\r\n\r\n');
  t.ok(garbage.status === 400 && /"error"/.test(garbage.body), 'garbage instead of HTTP is 400 JSON', garbage.raw.slice(0, 200));
  const many = 'POST /v1/completions HTTP/1.1\r\nHost: x\r\n' +
    Array.from({ length: 10000 }, (_, i) => `X-H${i}: v`).join('\r\n') + '\r\n\r\n';
  const h10k = await raw(port, many);
  t.ok([400, 413, 431].includes(h10k.status) && /"error"/.test(h10k.body), '10,000 headers are refused with JSON',
    `status ${h10k.status} ${h10k.raw.slice(0, 300)}`);
  const h70 = 'GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n' +
    Array.from({ length: 70 }, (_, i) => `X-H${i}: v`).join('\r\n') + '\r\n\r\n';
  const r70 = await raw(port, h70);
  t.ok(r70.status === 431 && /at most 63/.test(r70.body), '70 headers (past what CivetWeb keeps) are 431', r70.raw.slice(0, 300));
  const longHeader = `GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(64 << 10)}\r\n\r\n`;
  const big = await raw(port, longHeader);
  t.ok([400, 413, 431].includes(big.status) && /"error"/.test(big.body), 'a 64 KiB header is refused with JSON', big.raw.slice(0, 300));

  // a body cut short: the client declares 100 bytes, sends 10 and stops writing
  const cutShort = await raw(port, `POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${KEY}\r\n` +
    'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"prompt":', { halfClose: true });
  t.ok(cutShort.status === 400 && /ended after 10 of its 100 bytes/.test(cutShort.body), 'a truncated body is 400',
    cutShort.raw.slice(0, 300));

  // 50 MB: declared up front (refused before reading) and chunked (refused at the cap)
  const fifty = 50 << 20;
  const declared = await raw(port, [`POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${KEY}\r\n` +
    `Content-Type: application/json\r\nContent-Length: ${fifty}\r\n\r\n`, Buffer.alloc(1 << 20, 0x20)]);
  t.ok(declared.status === 413 && /at most 8388608/.test(declared.body), 'a declared 50 MB body is 413',
    `status ${declared.status} ${declared.raw.slice(0, 300)}`);
  const chunk = Buffer.alloc(1 << 20, 0x20);
  const chunks = [`POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${KEY}\r\n` +
    'Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n'];
  for (let i = 0; i < 50; i++) chunks.push(`${chunk.length.toString(16)}\r\n`, chunk, '\r\n');
  chunks.push('0\r\n\r\n');
  const chunked = await raw(port, chunks, { timeoutMs: 30000 });
  t.ok(chunked.status === 413 && /over 8388608 bytes/.test(chunked.body), 'a chunked 50 MB body is 413',
    `status ${chunked.status} error ${chunked.error} ${chunked.raw.slice(0, 300)}`);
  const fetch50 = await call(url, '/v1/completions', { key: KEY, body: JSON.stringify({ prompt: 'a'.repeat(fifty) }) })
    .catch((e) => ({ status: 0, text: String(e) }));
  t.ok(fetch50.status === 413, 'a 50 MB body from fetch is 413', `${fetch50.status} ${fetch50.text?.slice(0, 200)}`);

  // unknown fields are ignored and counted
  const before = (await metrics(url, KEY)).get('tierlm:request_unknown_fields_total');
  const unk = await call(url, '/v1/completions', { key: KEY, body: { ...ok, frobnicate: 1, also_unknown: [1] } });
  t.ok(unk.status === 200, 'unknown fields are ignored');
  const after = (await metrics(url, KEY)).get('tierlm:request_unknown_fields_total');
  t.eq(after - before, 2, 'unknown fields are counted in /metrics');

  // ---- still serving, and never a 500 ----
  const fine = await call(url, '/v1/completions', { key: KEY, body: { prompt: 'still there?', max_tokens: 4 } });
  t.ok(fine.status === 200 && fine.json.usage.completion_tokens === 4, 'the server still serves after all that');
  const m = await metrics(url, KEY);
  t.ok(m.get('tierlm:http_responses_total{code="500",model_name="tiny-qwen-152k"}') === undefined,
    'no answer was a 500');
  t.eq(m.get('vllm:num_requests_running'), 0, 'nothing left running');
} catch (e) {
  t.ok(false, 'no unexpected exception', e.stack);
}
const ex = await srv.stop();
t.eq(ex, { code: 0, signal: null }, 'the server exits 0 on SIGTERM');
t.finish();
