// test_bench: `tierlm bench serve` against `tierlm serve`: every request completes with the
// asked lengths, the JSON holds vLLM's keys with consistent numbers (median <= p99, TTFT <=
// E2EL, as many inter-token gaps as chunks), --max-concurrency 1 really serialises requests,
// a request rate spreads them out, text prompts through --tokenizer on the chat endpoint work,
// and a wrong URL or model fails with a message and exit code 1.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { args, checker, startServer } from './harness.mjs';

const a = args();
const t = checker('test_bench');
const dir = mkdtempSync(path.join(tmpdir(), 'tierlm-bench-'));
const srv = await startServer(a, ['--max-num-seqs', '16', '--disable-log-requests'], { quiet: true });

function bench(extra, name) {
  const out = path.join(dir, `${name}.json`);
  const r = spawnSync(a.bin, ['bench', 'serve', '--base-url', srv.url, '--output-json', out, ...extra],
    { encoding: 'utf8', timeout: 300000 });
  let json = null;
  try { json = JSON.parse(readFileSync(out, 'utf8')); } catch { /* no file */ }
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, json };
}

try {
  const r = bench(['--num-prompts', '24', '--random-input-len', '40', '--random-output-len', '12', '--ignore-eos',
    '--request-rate', '40', '--max-concurrency', '6', '--seed', '3'], 'main');
  const j = r.json;
  t.ok(r.code === 0 && j, 'bench serve runs and writes JSON', `${r.code} ${r.stderr}`);
  t.ok(/Serving Benchmark Result/.test(r.stdout) && /Median TTFT \(ms\):/.test(r.stdout) &&
    /P99 E2EL \(ms\):/.test(r.stdout), 'it prints vLLM\'s table');
  t.eq([j.completed, j.total_input_tokens, j.total_output_tokens], [24, 960, 288], 'every request, every token');
  t.ok(j.output_lens.every((n) => n === 12) && j.input_lens.every((n) => n === 40), 'per-request lengths');
  t.ok(j.model_id === 'tiny-qwen-152k', 'the model comes from /v1/models');
  for (const k of ['ttft', 'tpot', 'itl', 'e2el'])
    t.ok(j[`mean_${k}_ms`] > 0 && j[`median_${k}_ms`] <= j[`p99_${k}_ms`] + 1e-9 && j[`std_${k}_ms`] >= 0,
      `${k}: positive mean, median <= p99`, JSON.stringify([j[`mean_${k}_ms`], j[`median_${k}_ms`], j[`p99_${k}_ms`]]));
  t.ok(j.ttfts.every((x, i) => x > 0 && x <= j.e2els[i]), 'TTFT <= E2EL for every request');
  t.ok(j.itls.every((g) => g.length >= 1 && g.length <= 11), 'at most one gap per token after the first');
  t.ok(Math.abs(j.request_throughput - 24 / j.duration) < 1e-6 &&
    Math.abs(j.total_token_throughput - (960 + 288) / j.duration) < 1e-6, 'throughputs are counts over the duration');

  const seq = bench(['--num-prompts', '8', '--random-input-len', '16', '--random-output-len', '8', '--ignore-eos',
    '--max-concurrency', '1'], 'seq');
  const sum = seq.json.e2els.reduce((x, y) => x + y, 0);
  t.ok(seq.code === 0 && sum <= seq.json.duration, '--max-concurrency 1 never overlaps two requests',
    `sum of E2EL ${sum} vs duration ${seq.json?.duration}`);
  const slow = bench(['--num-prompts', '10', '--random-input-len', '8', '--random-output-len', '2', '--ignore-eos',
    '--request-rate', '5'], 'rate');
  t.ok(slow.code === 0 && slow.json.duration > 0.5, '--request-rate 5 spreads 10 requests over time',
    `${slow.json?.duration}`);

  const chat = bench(['--endpoint', '/v1/chat/completions', '--tokenizer', a.tokenizer, '--num-prompts', '6',
    '--random-input-len', '20', '--random-output-len', '5', '--ignore-eos', '--random-range-ratio', '0.5'], 'chat');
  t.ok(chat.code === 0 && chat.json.completed === 6, 'text prompts on the chat endpoint', chat.stderr);
  t.ok(chat.json.input_lens.every((n) => n >= 10 && n <= 30), '--random-range-ratio keeps lengths in range');

  const wrong = spawnSync(a.bin, ['bench', 'serve', '--base-url', 'http://127.0.0.1:1', '--num-prompts', '2'],
    { encoding: 'utf8' });
  t.ok(wrong.status === 1 && /failed/.test(wrong.stderr), 'an unreachable server is exit 1 with a message', wrong.stderr);
  const badModel = bench(['--model', 'nope', '--num-prompts', '2'], 'bad');
  t.ok(badModel.code === 1 && /does not exist/.test(badModel.stderr), 'an unknown model fails the test request',
    badModel.stderr);
} catch (e) {
  t.ok(false, 'no unexpected exception', e.stack);
}
t.eq(await srv.stop(), { code: 0, signal: null }, 'the server exits 0');
rmSync(dir, { recursive: true, force: true });
t.finish();
