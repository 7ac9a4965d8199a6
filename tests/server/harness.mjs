// harness: what the server tests share: arguments, starting `tierlm serve` on a free loopback
// port (tiny Qwen2 shape with dummy weights + the real Qwen3 tokenizer), stopping it with
// SIGTERM and checking it exits 0 (under ASan a leak makes that fail), raw HTTP over a socket
// for what fetch refuses to send, and a checker that counts failures.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import path from 'node:path';

// argv: TIERLM_BIN MODEL_DIR TOKENIZER_DIR NODE_MODULES_PARENT
export function args() {
  const [bin, model, tokenizer, modules] = process.argv.slice(2);
  if (!bin || !model || !tokenizer || !modules) {
    console.error('usage: node test.mjs TIERLM_BIN MODEL_DIR TOKENIZER_DIR NODE_MODULES_PARENT');
    process.exit(1);
  }
  if (!existsSync(path.join(tokenizer, 'tokenizer.json'))) {
    console.log(`skip: no tokenizer at ${tokenizer} (tests/tokenizers/setup.sh did not run)`);
    process.exit(77);
  }
  return { bin, model, tokenizer, modules };
}

// The official client, from the build tree where setup.sh installed it.
export function openaiClass(modules) {
  const req = createRequire(path.resolve(modules, 'package.json'));
  try {
    return req('openai').OpenAI;
  } catch (e) {
    console.log(`skip: the openai package is not installed in ${modules} (${e.message})`);
    process.exit(77);
  }
}

export async function startServer(a, extra = [], { quiet = false } = {}) {
  const argv = ['serve', '--model', a.model, '--load-format', 'dummy', '--tokenizer', a.tokenizer,
    '--port', '0', '--max-model-len', '512', ...extra];
  const proc = spawn(a.bin, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
  let tail = [];
  let resolvePort;
  const portP = new Promise((res) => { resolvePort = res; });
  let buf = '';
  proc.stderr.setEncoding('utf8');
  proc.stderr.on('data', (d) => {
    buf += d;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (!quiet) tail.push(line);
      if (tail.length > 400) tail = tail.slice(-200);
      const m = /listening on http:\/\/(\S+):(\d+)/.exec(line);
      if (m) resolvePort(Number(m[2]));
    }
  });
  const exited = new Promise((res) => proc.on('exit', (code, signal) => res({ code, signal })));
  const port = await Promise.race([
    portP,
    exited.then((e) => { throw new Error(`tierlm serve exited (${JSON.stringify(e)}) before listening:\n${tail.join('\n')}`); }),
    new Promise((_, rej) => setTimeout(() => rej(new Error('tierlm serve did not start in 120 s')), 120000)),
  ]);
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    log: () => tail.join('\n'),
    async stop() {
      proc.kill('SIGTERM');
      const e = await Promise.race([exited,
        new Promise((res) => setTimeout(() => res({ code: 'timeout' }), 60000))]);
      if (e.code === 'timeout') proc.kill('SIGKILL');
      return e;
    },
  };
}

// Sends bytes on a fresh connection and collects what comes back until the server closes it
// (or timeoutMs passes). Returns { status, headers, body, raw, error }.
export function raw(port, chunks, { timeoutMs = 10000, halfClose = false } = {}) {
  return new Promise((resolve) => {
    const sock = net.connect(port, '127.0.0.1');
    const got = [];
    let error = null;
    const done = () => {
      clearTimeout(timer);
      const text = Buffer.concat(got).toString('latin1');
      const head = text.split('\r\n\r\n')[0];
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(text);
      const headers = {};
      for (const l of head.split('\r\n').slice(1)) {
        const i = l.indexOf(':');
        if (i > 0) headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
      }
      resolve({ status: m ? Number(m[1]) : 0, headers, body: text.slice(head.length + 4), raw: text, error });
    };
    const timer = setTimeout(() => { sock.destroy(); done(); }, timeoutMs);
    sock.on('data', (d) => got.push(d));
    sock.on('error', (e) => { error = e.code; });
    sock.on('close', done);
    sock.on('connect', async () => {
      for (const c of [].concat(chunks)) {
        if (sock.destroyed) break;
        if (!sock.write(c)) {
          await new Promise((r) => {
            const f = () => { sock.off('drain', f); sock.off('close', f); r(); };
            sock.on('drain', f);
            sock.on('close', f);
          });
        }
      }
      if (halfClose && !sock.destroyed) sock.end();
    });
  });
}

export function checker(suite) {
  let fails = 0, n = 0;
  const ok = (cond, what, detail = '') => {
    n++;
    if (cond) console.log(`ok   ${what}`);
    else { fails++; console.log(`FAIL ${what}${detail ? ': ' + detail : ''}`); }
    return cond;
  };
  return {
    ok,
    eq(a, b, what) {
      const sa = JSON.stringify(a), sb = JSON.stringify(b);
      return ok(sa === sb, what, `got ${sa?.slice(0, 300)}, want ${sb?.slice(0, 300)}`);
    },
    // Runs fn, which must reject with an APIError of this status whose message matches re.
    async rejects(fn, status, re, what) {
      try {
        await fn();
        return ok(false, what, 'no error');
      } catch (e) {
        const msg = e?.error?.message ?? e?.message ?? String(e);
        return ok(e?.status === status && re.test(msg), what, `status ${e?.status}, message ${msg}`);
      }
    },
    finish() {
      console.log(`${suite}: ${n - fails}/${n} passed`);
      process.exit(fails ? 1 : 0);
    },
  };
}

// One JSON request with fetch; returns { status, headers, json, text }.
export async function call(url, pathName, { method = 'POST', body, headers = {}, key } = {}) {
  const h = { ...headers };
  if (body !== undefined && !h['Content-Type']) h['Content-Type'] = 'application/json';
  if (key) h.Authorization = `Bearer ${key}`;
  const r = await fetch(url + pathName, {
    method, headers: h, body: body === undefined ? undefined
      : typeof body === 'string' || body instanceof Uint8Array ? body : JSON.stringify(body),
  });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: r.status, headers: r.headers, json, text };
}

export async function metrics(url, key) {
  const r = await call(url, '/metrics', { method: 'GET', key });
  const values = {};
  for (const line of r.text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    values[line.slice(0, i)] = Number(line.slice(i + 1));
  }
  return { text: r.text, status: r.status, get: (prefix) => {
    let sum = 0, found = false;
    for (const [k, v] of Object.entries(values)) if (k === prefix || k.startsWith(prefix + '{')) { sum += v; found = true; }
    return found ? sum : undefined;
  } };
}
