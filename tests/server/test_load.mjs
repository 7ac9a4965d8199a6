// test_load: the server under load, checked as a client sees it. Two rounds of 200 concurrent
// streaming requests, 30% of the clients hanging up mid-stream: every other stream is framed
// correctly and equals the greedy answer the same prompt gets alone; every hang-up is noticed
// (tierlm:client_disconnects_total) and afterwards /metrics shows nothing running and no KV
// block held. Then a server with a small queue gets twice the requests it may hold: each one is
// answered, completely (200) or with 429 and Retry-After, and accepted + rejected = sent.
import { args, call, checker, metrics, startServer } from './harness.mjs';

const a = args();
const t = checker('test_load');
const ROUNDS = 2, CLIENTS = 200, HANGUPS = 60, TOKENS = 24;
const prompts = ['Once upon a time', 'The capital of France is', 'def fibonacci(n):', '你好，世界'];

// Streams one completion with fetch and parses the SSE framing itself. hangUpAfter > 0: abort
// the connection after that many events.
async function stream(url, body, hangUpAfter = 0) {
  const ac = new AbortController();
  const r = await fetch(`${url}/v1/completions`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body), signal: ac.signal,
  });
  if (r.status !== 200) return { status: r.status, text: await r.text() };
  const reader = r.body.getReader();
  const dec = new TextDecoder();
  let buf = '';
  const events = [];
  for (;;) {
    let chunk;
    try {
      chunk = await reader.read();
    } catch (e) {
      return { status: 200, events, error: String(e) };
    }
    if (chunk.done) break;
    buf += dec.decode(chunk.value, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      events.push(buf.slice(0, i));
      buf = buf.slice(i + 2);
    }
    if (hangUpAfter && events.length >= hangUpAfter) {
      ac.abort();
      return { status: 200, events, hungUp: true };
    }
  }
  return { status: 200, events, rest: buf, contentType: r.headers.get('content-type') };
}

function checkStream(res, want) {
  if (res.status !== 200) return `status ${res.status}: ${res.text}`;
  if (res.rest) return `trailing bytes ${JSON.stringify(res.rest)}`;
  if (!/^text\/event-stream/.test(res.contentType)) return `content-type ${res.contentType}`;
  const ev = res.events;
  if (ev[ev.length - 1] !== 'data: [DONE]') return `last event ${ev[ev.length - 1]}`;
  const data = ev.slice(0, -1).map((e) => {
    if (!e.startsWith('data: ')) throw new Error(`bad event ${e}`);
    return JSON.parse(e.slice(6));
  });
  const usage = data[data.length - 1];
  if (usage.choices.length !== 0 || usage.usage?.completion_tokens !== TOKENS) return `usage ${JSON.stringify(usage)}`;
  const text = data.slice(0, -1).map((d) => d.choices[0].text).join('');
  if (text !== want) return `text ${JSON.stringify(text)} != ${JSON.stringify(want)}`;
  if (data[data.length - 2].choices[0].finish_reason !== 'length') return 'no finish_reason';
  return null;
}

async function settle(url, key) {
  for (let i = 0; i < 100; i++) {
    const m = await metrics(url, key);
    if (m.get('vllm:num_requests_running') === 0 && m.get('vllm:num_requests_waiting') === 0) return m;
    await new Promise((r) => setTimeout(r, 100));
  }
  return metrics(url, key);
}

// A counter once it reaches want (a handler counts its hang-up just after the engine lets the
// request go), or its value after 5 s.
async function counterAt(url, name, want) {
  let v;
  for (let i = 0; i < 50; i++) {
    v = (await metrics(url)).get(name);
    if (v >= want) return v;
    await new Promise((r) => setTimeout(r, 100));
  }
  return v;
}

// ---- 1. concurrent streams with hang-ups ----
const srv = await startServer(a, ['--max-num-seqs', '64', '--disable-log-requests'], { quiet: true });
try {
  const want = [];
  for (const p of prompts) {
    const r = await call(srv.url, '/v1/completions', { body: { prompt: p, max_tokens: TOKENS, temperature: 0, ignore_eos: true } });
    want.push(r.json.choices[0].text);
  }
  let hungUp = 0;
  for (let round = 0; round < ROUNDS; round++) {
    const started = Date.now();
    const jobs = [];
    for (let i = 0; i < CLIENTS; i++) {
      const k = i % prompts.length;
      const hangs = i % 10 < 3; // 30%
      const body = { prompt: prompts[k], temperature: 0, ignore_eos: true, stream: true,
        stream_options: { include_usage: true }, max_tokens: hangs ? 400 : TOKENS };
      jobs.push(stream(srv.url, body, hangs ? 3 : 0).then((res) => ({ res, k, hangs })));
    }
    const done = await Promise.all(jobs);
    const bad = [];
    for (const { res, k, hangs } of done) {
      if (hangs) {
        if (res.hungUp) hungUp++;
        else bad.push(`a client meant to hang up got ${JSON.stringify(res).slice(0, 200)}`);
        continue;
      }
      const why = checkStream(res, want[k]);
      if (why) bad.push(why);
    }
    t.ok(bad.length === 0, `round ${round + 1}: ${CLIENTS - HANGUPS} streams complete and equal to the greedy answer ` +
      `(${Date.now() - started} ms)`, bad.slice(0, 3).join('\n'));
  }
  // whole (non-streamed) answers whose clients hang up while they are generated
  await settle(srv.url);
  const gone0 = await counterAt(srv.url, 'tierlm:client_disconnects_total', ROUNDS * HANGUPS);
  const acs = Array.from({ length: 10 }, () => new AbortController());
  const whole = acs.map((ac, i) => fetch(`${srv.url}/v1/completions`, { method: 'POST', signal: ac.signal,
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ prompt: prompts[i % 4], max_tokens: 480, ignore_eos: true }) }).catch(() => 'aborted'));
  // hang up once all ten are in the engine
  for (let i = 0; i < 200; i++) {
    const mm = await metrics(srv.url);
    if (mm.get('vllm:num_requests_running') + mm.get('vllm:num_requests_waiting') >= 10) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  acs.forEach((ac) => ac.abort());
  t.ok((await Promise.all(whole)).every((x) => x === 'aborted'), 'the ten whole answers were hung up on');
  const m = await settle(srv.url);
  const gone1 = await counterAt(srv.url, 'tierlm:client_disconnects_total', gone0 + 10);
  t.eq(gone1 - gone0, 10, 'hang-ups during whole answers are noticed too');
  t.eq(m.get('vllm:num_requests_running'), 0, 'nothing running afterwards');
  t.eq(m.get('vllm:num_requests_waiting'), 0, 'nothing waiting afterwards');
  t.eq(m.get('vllm:kv_cache_usage_perc'), 0, '/metrics shows KV usage back to 0');
  t.eq(m.get('tierlm:kv_blocks_used'), 0, 'no KV block leaked');
  t.eq(hungUp, ROUNDS * HANGUPS, 'every hanging-up client hung up mid-stream');
  t.eq(gone0, ROUNDS * HANGUPS, 'every hang-up of a stream was noticed and aborted');
  t.ok(m.get('vllm:request_success_total{finished_reason="abort",model_name="tiny-qwen-152k"}') >= ROUNDS * HANGUPS,
    'the engine finished the hung-up requests as aborted');
  const after = await call(srv.url, '/v1/completions', { body: { prompt: prompts[0], max_tokens: TOKENS, temperature: 0, ignore_eos: true } });
  t.eq(after.json?.choices?.[0]?.text, want[0], 'the answer is unchanged after the load');
} catch (e) {
  t.ok(false, 'no unexpected exception', e.stack);
}
t.eq(await srv.stop(), { code: 0, signal: null }, 'the loaded server exits 0 on SIGTERM');

// ---- 2. twice what the queue holds ----
const SEQS = 4, QUEUED = 8, SENT = 2 * (SEQS + QUEUED);
const q = await startServer(a, ['--max-num-seqs', `${SEQS}`, '--max-queued-requests', `${QUEUED}`,
  '--disable-log-requests'], { quiet: true });
try {
  const res = await Promise.all(Array.from({ length: SENT }, (_, i) => call(q.url, '/v1/completions', {
    body: { prompt: prompts[i % prompts.length], max_tokens: 64, ignore_eos: true },
  }).catch((e) => ({ status: 0, text: String(e) }))));
  const okN = res.filter((r) => r.status === 200 && r.json.usage.completion_tokens === 64).length;
  const rejected = res.filter((r) => r.status === 429 && r.headers.get('retry-after') &&
    r.json?.error?.code === 429 && /at capacity/.test(r.json.error.message)).length;
  t.eq(okN + rejected, SENT, `${SENT} requests: ${okN} answered whole + ${rejected} refused with 429 = all`);
  t.ok(rejected > 0, 'the queue cap refused some', `statuses ${res.map((r) => r.status).join(',')}`);
  t.ok(okN >= SEQS + QUEUED, 'it accepted at least what it may hold', `${okN}`);
  const m = await settle(q.url);
  t.eq(m.get('tierlm:requests_rejected_total'), rejected, 'refusals are counted in /metrics');
  t.eq(m.get('tierlm:kv_blocks_used'), 0, 'no KV block held afterwards');
} catch (e) {
  t.ok(false, 'queue: no unexpected exception', e.stack);
}
t.eq(await q.stop(), { code: 0, signal: null }, 'the queue server exits 0');
t.finish();
