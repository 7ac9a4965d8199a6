// test_openai: the official `openai` npm client against `tierlm serve` on loopback, as a user's
// program would call it: models, completions and chat (whole and streamed, with usage), stop
// strings and stop ids, n > 1 and batched prompts, logprobs, seeds, the errors it raises
// (400 with vLLM's context-length wording, 401, 404), /tokenize, /detokenize, /version,
// /metrics, the deepseek_r1 reasoning parser, and a clean exit on SIGTERM.
import { spawnSync } from 'node:child_process';
import { args, call, checker, metrics, openaiClass, startServer } from './harness.mjs';

const a = args();
const OpenAI = openaiClass(a.modules);
const t = checker('test_openai');
const KEY = 'sk-tierlm-test-key';
const srv = await startServer(a, ['--api-key', KEY, '--served-model-name', 'tiny', 'tiny-alias',
  '--max-num-seqs', '16']);
const client = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: KEY, maxRetries: 0 });
const model = 'tiny';

async function streamText(params, kind = 'completions') {
  const chunks = [];
  const s = kind === 'chat' ? await client.chat.completions.create({ ...params, stream: true })
    : await client.completions.create({ ...params, stream: true });
  for await (const c of s) chunks.push(c);
  return chunks;
}

try {
  // ---- models ----
  const models = await client.models.list();
  t.eq(models.data.map((m) => m.id), ['tiny', 'tiny-alias'], 'models.list names the served models');
  t.ok(models.data[0].max_model_len === 512, 'models.list gives max_model_len');
  t.eq((await client.models.retrieve('tiny-alias')).id, 'tiny-alias', 'models.retrieve');
  await t.rejects(() => client.models.retrieve('gpt-4'), 404, /The model `gpt-4` does not exist/,
    'models.retrieve of an unknown model is 404');

  // ---- completions ----
  const base = { model, prompt: 'Once upon a time', max_tokens: 12, temperature: 0, ignore_eos: true };
  const c1 = await client.completions.create(base);
  t.ok(c1.object === 'text_completion' && c1.id.startsWith('cmpl-'), 'completion object and id');
  t.ok(c1.choices.length === 1 && typeof c1.choices[0].text === 'string' && c1.choices[0].text.length > 0,
    'completion has text', JSON.stringify(c1.choices));
  t.eq(c1.choices[0].finish_reason, 'length', 'finish_reason length at max_tokens');
  t.eq(c1.usage, { prompt_tokens: 4, completion_tokens: 12, total_tokens: 16 }, 'usage counts tokens');
  const c2 = await client.completions.create(base);
  t.eq(c2.choices[0].text, c1.choices[0].text, 'greedy is deterministic');
  const viaAlias = await client.completions.create({ ...base, model: 'tiny-alias' });
  t.eq(viaAlias.choices[0].text, c1.choices[0].text, 'every served name reaches the model');

  // streaming equals the whole answer; usage in its own chunk with no choices
  const sc = await streamText({ ...base, stream_options: { include_usage: true } });
  const sText = sc.filter((c) => c.choices.length).map((c) => c.choices[0].text).join('');
  t.eq(sText, c1.choices[0].text, 'streamed completion text equals the whole one');
  t.ok(sc.length >= 3, 'a stream sends chunk after chunk', `${sc.length} chunks`);
  const last = sc[sc.length - 1];
  t.ok(last.choices.length === 0 && last.usage?.completion_tokens === 12, 'usage chunk last, choices []',
    JSON.stringify(last));
  t.eq(sc[sc.length - 2].choices[0].finish_reason, 'length', 'finish_reason in the last text chunk');
  t.ok(sc.slice(0, -2).every((c) => c.choices[0].finish_reason === null), 'finish_reason null until then');

  // ids: return_token_ids, token-id prompts, echo
  const ids = await call(srv.url, '/v1/completions', { key: KEY, body: { ...base, return_token_ids: true } });
  const genIds = ids.json.choices[0].token_ids;
  t.ok(Array.isArray(genIds) && genIds.length === 12, 'return_token_ids gives the generated ids');
  const promptIds = ids.json.choices[0].prompt_token_ids;
  const byIds = await client.completions.create({ ...base, prompt: promptIds });
  t.eq(byIds.choices[0].text, c1.choices[0].text, 'a token-id prompt equals its text');
  const echo = await client.completions.create({ ...base, echo: true });
  t.eq(echo.choices[0].text, 'Once upon a time' + c1.choices[0].text, 'echo prepends the prompt');

  // stop strings: the text is cut where the stop string first appears
  const full = c1.choices[0].text;
  const stop = [...full].slice(3, 5).join('');
  const cut = full.indexOf(stop);
  const st = await client.completions.create({ ...base, stop: [stop] });
  t.eq(st.choices[0].text, full.slice(0, cut), `stop string ${JSON.stringify(stop)} cuts the text`);
  t.eq(st.choices[0].finish_reason, 'stop', 'finish_reason stop at a stop string');
  t.eq(st.choices[0].stop_reason, stop, 'stop_reason names the stop string');
  const sti = await client.completions.create({ ...base, stop: stop, include_stop_str_in_output: true });
  t.eq(sti.choices[0].text, full.slice(0, cut + stop.length), 'include_stop_str_in_output keeps it');
  const sst = await streamText({ ...base, stop: [stop] });
  t.eq(sst.map((c) => c.choices[0].text).join(''), full.slice(0, cut), 'a stream stops at the stop string too');
  t.ok(sst[sst.length - 1].choices[0].finish_reason === 'stop' && sst[sst.length - 1].choices[0].stop_reason === stop,
    'the last streamed chunk names the stop string', JSON.stringify(sst[sst.length - 1]));
  const cu = await streamText({ ...base, stream_options: { include_usage: true, continuous_usage_stats: true } });
  const counts = cu.filter((c) => c.choices.length).map((c) => c.usage?.completion_tokens);
  t.ok(counts.every((n, i) => n >= 1 && (i === 0 || n > counts[i - 1])) && counts[counts.length - 1] === 12 &&
    cu.every((c) => c.usage?.prompt_tokens === 4), 'continuous_usage_stats counts up to 12 in every chunk',
  JSON.stringify(counts));
  const stopId = genIds[5];
  const sid = await call(srv.url, '/v1/completions', {
    key: KEY, body: { ...base, stop_token_ids: [stopId], return_token_ids: true },
  });
  t.eq(sid.json.choices[0].token_ids, genIds.slice(0, genIds.indexOf(stopId) + 1),
    'stop_token_ids ends at the id');
  t.eq(sid.json.choices[0].stop_reason, stopId, 'stop_reason names the stop id');

  // n > 1 and batches: choice i with seed s is the single request with seed s + i
  const sampled = { model, prompt: 'The weather today', max_tokens: 10, temperature: 1.5, ignore_eos: true };
  const nres = await client.completions.create({ ...sampled, n: 3, seed: 40 });
  t.eq(nres.choices.map((c) => c.index), [0, 1, 2], 'n = 3 gives three choices');
  t.ok(new Set(nres.choices.map((c) => c.text)).size === 3, 'the n choices differ (a seed each)');
  t.eq(nres.usage.completion_tokens, 30, 'n = 3 counts every choice\'s tokens');
  t.eq(nres.usage.prompt_tokens, 3, 'n = 3 counts the prompt once');
  for (let i = 0; i < 3; i++) {
    const one = await client.completions.create({ ...sampled, seed: 40 + i });
    t.eq(nres.choices[i].text, one.choices[0].text, `choice ${i} is the seed ${40 + i} answer`);
  }
  const again = await client.completions.create({ ...sampled, n: 3, seed: 40 });
  t.eq(again.choices.map((c) => c.text), nres.choices.map((c) => c.text), 'the same seed repeats');
  const batch = await client.completions.create({ ...base, prompt: ['Once upon a time', 'Hello'], n: 2 });
  t.eq(batch.choices.map((c) => c.index), [0, 1, 2, 3], 'two prompts x n = 2 give four choices');
  t.eq(batch.choices[1].text, c1.choices[0].text, 'a batched prompt answers as alone');
  const nstream = await streamText({ ...sampled, n: 2, seed: 40 });
  for (let i = 0; i < 2; i++)
    t.eq(nstream.filter((c) => c.choices[0].index === i).map((c) => c.choices[0].text).join(''),
      nres.choices[i].text, `streamed choice ${i} of n = 2`);

  // logprobs
  const lp = await client.completions.create({ ...base, logprobs: 2 });
  const L = lp.choices[0].logprobs;
  t.ok(L && L.tokens.length === 12 && L.token_logprobs.length === 12 && L.top_logprobs.length === 12,
    'completion logprobs: one entry per token');
  t.ok(L.token_logprobs.every((x) => x <= 0) && L.top_logprobs.every((o) => Object.keys(o).length <= 2),
    'logprobs are <= 0 with at most 2 alternatives');
  t.eq(L.tokens.join(''), full, 'the logprob tokens spell the text');
  t.ok(L.text_offset[0] === 0 && L.text_offset.every((o, i) => i === 0 || o >= L.text_offset[i - 1]),
    'text_offset grows from 0');

  // ---- chat ----
  const msgs = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Say hello.' }];
  const chat = { model, messages: msgs, max_tokens: 10, temperature: 0, ignore_eos: true };
  const ch = await client.chat.completions.create(chat);
  t.ok(ch.object === 'chat.completion' && ch.id.startsWith('chatcmpl-'), 'chat object and id');
  t.eq(ch.choices[0].message.role, 'assistant', 'chat message role');
  t.ok(typeof ch.choices[0].message.content === 'string' && ch.choices[0].message.content.length > 0,
    'chat message content');
  const tok = await call(srv.url, '/tokenize', { key: KEY, body: { model, messages: msgs } });
  t.eq(ch.usage.prompt_tokens, tok.json.count, 'chat prompt tokens equal /tokenize of the messages');
  const cs = await streamText({ ...chat, stream_options: { include_usage: true } }, 'chat');
  t.eq(cs[0].choices[0].delta, { role: 'assistant', content: '' }, 'the first chat chunk carries the role');
  t.eq(cs.filter((c) => c.choices.length).map((c) => c.choices[0].delta.content ?? '').join(''),
    ch.choices[0].message.content, 'streamed chat content equals the whole one');
  t.ok(cs[cs.length - 1].choices.length === 0 && cs[cs.length - 1].usage.completion_tokens === 10,
    'chat usage chunk');
  t.ok(cs.every((c) => c.object === 'chat.completion.chunk' && c.id === cs[0].id), 'chunks share the id');
  const chlp = await client.chat.completions.create({ ...chat, logprobs: true, top_logprobs: 3 });
  const content = chlp.choices[0].logprobs.content;
  t.ok(content.length === 10 && content.every((e) => e.top_logprobs.length === 3 && Array.isArray(e.bytes)),
    'chat logprobs: 10 tokens with 3 alternatives each');
  const mct = await client.chat.completions.create({ ...chat, max_tokens: undefined, max_completion_tokens: 3 });
  t.eq(mct.usage.completion_tokens, 3, 'max_completion_tokens');
  const noMax = await client.chat.completions.create({ ...chat, max_tokens: undefined, ignore_eos: true });
  t.eq(noMax.usage.total_tokens, 512, 'chat without max_tokens fills the context, as vLLM');
  const cont = await client.chat.completions.create({
    ...chat, messages: [...msgs, { role: 'assistant', content: 'Hello, I am' }],
    continue_final_message: true, add_generation_prompt: false,
  });
  t.ok(cont.usage.prompt_tokens > ch.usage.prompt_tokens, 'continue_final_message continues the message');

  // ---- errors the client raises ----
  await t.rejects(() => client.completions.create({ ...base, max_tokens: 0 }), 400,
    /max_tokens must be at least 1, got 0/, 'max_tokens 0 is 400');
  const long = 'word '.repeat(600);
  await t.rejects(() => client.completions.create({ ...base, prompt: long, max_tokens: 10 }), 400,
    /^This model's maximum context length is 512 tokens\. However, you requested \d+ tokens \(\d+ in the messages, 10 in the completion\)\. Please reduce the length of the messages or completion\.$/,
    'an over-long prompt is 400 with vLLM\'s wording');
  await t.rejects(() => client.chat.completions.create({ ...chat, max_tokens: undefined,
    messages: [{ role: 'user', content: long }] }), 400,
  /^This model's maximum context length is 512 tokens\. However, you requested \d+ tokens in the messages, Please reduce the length of the messages\.$/,
  'an over-long chat without max_tokens is 400 with vLLM\'s wording');
  await t.rejects(() => client.completions.create({ ...base, model: 'gpt-4' }), 404,
    /The model `gpt-4` does not exist/, 'an unknown model is 404');
  const bad = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: 'sk-wrong', maxRetries: 0 });
  await t.rejects(() => bad.completions.create(base), 401, /API key/, 'a wrong key is 401');
  await t.rejects(() => client.completions.create({ ...base, temperature: -1 }), 400,
    /temperature must be non-negative/, 'a negative temperature is 400');
  await t.rejects(() => client.completions.create({ ...base, n: 99 }), 400, /n must be at most 16/,
    'n over the cap is 400');

  // ---- the other endpoints ----
  const tk = await call(srv.url, '/tokenize', { key: KEY, body: { model, prompt: 'Hello world 12345 你好' } });
  t.eq(tk.json.tokens, [9707, 1879, 220, 16, 17, 18, 19, 20, 220, 108386], '/tokenize equals HF ids');
  t.eq(tk.json.max_model_len, 512, '/tokenize reports max_model_len');
  const dt = await call(srv.url, '/detokenize', { key: KEY, body: { model, tokens: tk.json.tokens } });
  t.eq(dt.json.prompt, 'Hello world 12345 你好', '/detokenize round trip');
  const ver = await call(srv.url, '/version', { method: 'GET', key: KEY });
  t.ok(ver.status === 200 && /^\d+\.\d+\.\d+$/.test(ver.json.version), '/version');
  const cors = await call(srv.url, '/v1/models', { method: 'GET', key: KEY, headers: { Origin: 'http://evil.example' } });
  t.ok(cors.status === 200 && !cors.headers.get('access-control-allow-origin'), 'CORS is off by default');
  const preflight = await fetch(`${srv.url}/v1/completions`, { method: 'OPTIONS', headers: {
    Origin: 'http://evil.example', 'Access-Control-Request-Method': 'POST' } });
  t.ok(preflight.status === 405 && !preflight.headers.get('access-control-allow-origin'),
    'a preflight gets no CORS headers by default');
  const twice = spawnSync(a.bin, ['serve', '--model', a.model, '--load-format', 'dummy', '--port', `${srv.port}`],
    { encoding: 'utf8', timeout: 60000 });
  t.ok(twice.status === 1 && /cannot listen on 127\.0\.0\.1 port \d+: Address already in use/.test(twice.stderr),
    'a port in use is refused before the model loads', twice.stderr);
  const health = await call(srv.url, '/health', { method: 'GET' });
  t.ok(health.status === 200, '/health needs no key');
  const m = await metrics(srv.url, KEY);
  t.ok(m.status === 200, '/metrics answers');
  for (const name of ['vllm:num_requests_running', 'vllm:num_requests_waiting', 'vllm:num_requests_swapped',
    'vllm:gpu_cache_usage_perc', 'vllm:kv_cache_usage_perc', 'vllm:cpu_cache_usage_perc',
    'vllm:prompt_tokens_total', 'vllm:generation_tokens_total', 'vllm:num_preemptions_total',
    'vllm:request_success_total', 'vllm:time_to_first_token_seconds_count',
    'vllm:time_per_output_token_seconds_count', 'vllm:e2e_request_latency_seconds_count'])
    t.ok(m.get(name) !== undefined, `/metrics has ${name}`);
  t.ok(m.text.includes('model_name="tiny"'), '/metrics labels model_name');
  t.ok(m.get('vllm:request_success_total{finished_reason="length",model_name="tiny"}') >= 20,
    'finished requests are counted by reason');
  t.ok(m.get('vllm:request_success_total{finished_reason="stop",model_name="tiny"}') >= 3,
    'stopped requests are counted');
  t.ok(m.get('vllm:generation_tokens_total') >= 200, 'generated tokens are counted');
  t.ok(m.get('vllm:e2e_request_latency_seconds_count') >= 20, 'latency histogram counts requests');
} catch (e) {
  t.ok(false, 'no unexpected exception', `${e.stack}\n--- server log ---\n${srv.log()}`);
}
const ex = await srv.stop();
t.eq(ex, { code: 0, signal: null }, 'the server exits 0 on SIGTERM');

// ---- the deepseek_r1 reasoning parser, on a second server ----
const r1 = await startServer(a, ['--reasoning-parser', 'deepseek_r1', '--allowed-origins',
  '["http://good.example"]'], { quiet: true });
try {
  // CORS: on for the listed origin only (the first server had it off)
  const pre = await fetch(`${r1.url}/v1/chat/completions`, { method: 'OPTIONS', headers: {
    Origin: 'http://good.example', 'Access-Control-Request-Method': 'POST',
    'Access-Control-Request-Headers': 'content-type,authorization' } });
  t.ok(pre.status === 200 && pre.headers.get('access-control-allow-origin') === 'http://good.example' &&
    /POST/.test(pre.headers.get('access-control-allow-methods')) &&
    pre.headers.get('access-control-allow-headers') === 'content-type,authorization',
  'a CORS preflight from an allowed origin is answered', JSON.stringify([...pre.headers]));
  const evil = await call(r1.url, '/v1/models', { method: 'GET', headers: { Origin: 'http://evil.example' } });
  t.ok(evil.status === 400 && !evil.headers.get('access-control-allow-origin'), 'another origin is refused');
  const good = await call(r1.url, '/v1/models', { method: 'GET', headers: { Origin: 'http://good.example' } });
  t.ok(good.status === 200 && good.headers.get('access-control-allow-origin') === 'http://good.example',
    'the allowed origin gets Access-Control-Allow-Origin');

  const rc = new OpenAI({ baseURL: `${r1.url}/v1`, apiKey: 'none', maxRetries: 0 });
  const q = { model: 'tiny-qwen-152k', messages: [{ role: 'user', content: 'Why?' }], max_tokens: 8,
    temperature: 0, ignore_eos: true };
  const whole = await rc.chat.completions.create(q);
  const msg = whole.choices[0].message;
  // random weights never write </think>, so everything is reasoning, as vLLM's parser says
  t.ok(typeof msg.reasoning_content === 'string' && msg.reasoning_content.length > 0 && msg.content === null,
    'without </think> the whole output is reasoning_content', JSON.stringify(msg));
  const chunks = [];
  for await (const c of await rc.chat.completions.create({ ...q, stream: true })) chunks.push(c);
  t.eq(chunks.slice(1).map((c) => c.choices[0].delta.reasoning_content ?? '').join(''), msg.reasoning_content,
    'streamed reasoning_content equals the whole one');
  t.ok(chunks.every((c) => c.choices[0].delta.content === undefined || c.choices[0].delta.content === ''),
    'no content deltas before </think>');
} catch (e) {
  t.ok(false, 'reasoning server: no unexpected exception', `${e.stack}\n${r1.log()}`);
}
t.eq(await r1.stop(), { code: 0, signal: null }, 'the reasoning server exits 0');
t.finish();
