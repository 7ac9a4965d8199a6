// render_golden: renders every case of tests/chat/cases.json with @huggingface/jinja (the Jinja
// of transformers.js) and writes the golden outputs test_chat compares against.
//   node render_golden.mjs CASES_JSON OUT_JSON
// Run it where node_modules holds @huggingface/jinja 0.5.11 (setup.sh arranges that).
// Variables are those HF's apply_chat_template passes: messages, add_generation_prompt,
// tools=None, documents=None, bos_token / eos_token when the model has them, and
// enable_thinking only when a case sets it. Template whitespace: Template() applies
// trim_blocks and lstrip_blocks, as transformers does.
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { Template } from "@huggingface/jinja";

const [casesPath, outPath] = process.argv.slice(2);
if (!casesPath || !outPath) {
	console.error("usage: node render_golden.mjs CASES_JSON OUT_JSON");
	process.exit(2);
}
// the package does not export its package.json; read it from the node_modules beside us
const pkg = new URL("./node_modules/@huggingface/jinja/package.json", import.meta.url);
const version = JSON.parse(readFileSync(pkg, "utf8")).version;
const doc = JSON.parse(readFileSync(casesPath, "utf8"));
const base = dirname(casesPath);
const sources = {};
for (const [id, t] of Object.entries(doc.templates)) sources[id] = readFileSync(join(base, t.file), "utf8");

function render(id, vars) {
	try {
		return { text: new Template(sources[id]).render(vars) };
	} catch (e) {
		return { error: String(e && e.message ? e.message : e) };
	}
}

// Where @huggingface/jinja is known to differ from Python Jinja, cases.json carries the text
// transformers renders (made by render_golden.py); the JS output is kept beside it.
function finish(c) {
	const o = (doc.overrides || {})[c.name];
	if (o && c.text !== o.text) {
		c.js_output = c.text !== undefined ? c.text : `error: ${c.error}`;
		c.js_differs = o.why;
		c.text = o.text;
		delete c.error;
	}
	return c;
}

const out = [];
for (const m of doc.matrix) {
	for (const id of m.templates) {
		const t = doc.templates[id];
		for (const [conv, messages] of Object.entries(doc.conversations)) {
			for (const agp of m.add_generation_prompt) {
				for (const think of m.enable_thinking) {
					const vars = { messages, add_generation_prompt: agp, tools: null, documents: null };
					if (t.bos_token !== null) vars.bos_token = t.bos_token;
					if (t.eos_token !== null) vars.eos_token = t.eos_token;
					if (think !== null) vars.enable_thinking = think;
					const name = `${id}/${conv}/agp=${agp}` + (m.enable_thinking.length > 1 ? `/thinking=${think}` : "");
					out.push(finish({
						kind: "chat", name, template: id, file: t.file, bos_token: t.bos_token, eos_token: t.eos_token,
						messages, add_generation_prompt: agp, enable_thinking: think, ...render(id, vars),
					}));
				}
			}
		}
	}
}
for (const x of doc.extra) {
	const r = render(x.template, x.vars);
	const c = { kind: "jinja", name: x.name, template: x.template, file: doc.templates[x.template].file, vars: x.vars, ...r };
	if (x.error !== undefined) c.expect_error = x.error;
	out.push(finish(c));
}
writeFileSync(outPath, JSON.stringify({ renderer: `@huggingface/jinja ${version}`, cases: out }, null, 1) + "\n");
const overridden = out.filter((c) => c.js_differs).length;
console.log(`render_golden: ${out.length} cases -> ${outPath} (${overridden} use transformers' text where @huggingface/jinja differs)`);
