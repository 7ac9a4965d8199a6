#!/usr/bin/env python3
"""render_golden.py: the same cases as render_golden.mjs, rendered with Python Jinja set up the
way HF transformers' apply_chat_template sets it up (ImmutableSandboxedEnvironment with
trim_blocks, lstrip_blocks and loop controls; tojson = json.dumps(ensure_ascii=False, ...);
raise_exception and strftime_now as globals). This is the renderer transformers itself uses,
so it arbitrates where @huggingface/jinja differs from it.

  python3 render_golden.py CASES_JSON OUT_JSON          render (needs the jinja2 package)
  python3 render_golden.py --compare A.json B.json      list the cases whose outputs differ
"""
import json
import os
import sys
from datetime import datetime


def hf_environment():
    import jinja2
    import jinja2.ext
    import jinja2.nodes
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.now().strftime(fmt)

    class AssistantTracker(jinja2.ext.Extension):
        """transformers' {% generation %} tag; outside training it renders its body."""
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            call = self.call_method("_generation_support")
            return jinja2.nodes.CallBlock(call, [], [], body).set_lineno(lineno)

        def _generation_support(self, caller):
            return caller()

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[AssistantTracker, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env, jinja2.__version__


def render_all(cases_path, out_path):
    env, version = hf_environment()
    doc = json.load(open(cases_path, encoding="utf-8"))
    base = os.path.dirname(cases_path)
    compiled = {}
    for tid, t in doc["templates"].items():
        with open(os.path.join(base, t["file"]), encoding="utf-8", newline="") as f:
            compiled[tid] = env.from_string(f.read())

    def render(tid, variables):
        try:
            return {"text": compiled[tid].render(**variables)}
        except Exception as e:  # a template error is a result to compare, not a crash
            return {"error": str(e)}

    out = []
    for m in doc["matrix"]:
        for tid in m["templates"]:
            t = doc["templates"][tid]
            for conv, messages in doc["conversations"].items():
                for agp in m["add_generation_prompt"]:
                    for think in m["enable_thinking"]:
                        v = {"messages": messages, "add_generation_prompt": agp, "tools": None,
                             "documents": None}
                        if t["bos_token"] is not None:
                            v["bos_token"] = t["bos_token"]
                        if t["eos_token"] is not None:
                            v["eos_token"] = t["eos_token"]
                        if think is not None:
                            v["enable_thinking"] = think
                        name = f"{tid}/{conv}/agp={'true' if agp else 'false'}"
                        if len(m["enable_thinking"]) > 1:
                            name += "/thinking=" + {None: "null", True: "true", False: "false"}[think]
                        c = {"kind": "chat", "name": name, "template": tid, "file": t["file"],
                             "bos_token": t["bos_token"], "eos_token": t["eos_token"],
                             "messages": messages, "add_generation_prompt": agp,
                             "enable_thinking": think}
                        c.update(render(tid, v))
                        out.append(c)
    for x in doc["extra"]:
        c = {"kind": "jinja", "name": x["name"], "template": x["template"],
             "file": doc["templates"][x["template"]]["file"], "vars": x["vars"]}
        c.update(render(x["template"], x["vars"]))
        if "error" in x:
            c["expect_error"] = x["error"]
        out.append(c)
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump({"renderer": f"jinja2 {version} (transformers settings)", "cases": out}, f,
                  ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"render_golden.py: {len(out)} cases -> {out_path}")


def compare(a_path, b_path):
    a = json.load(open(a_path, encoding="utf-8"))
    b = json.load(open(b_path, encoding="utf-8"))
    bc = {c["name"]: c for c in b["cases"]}
    differ = 0
    for c in a["cases"]:
        d = bc.get(c["name"])
        if d is None:
            print(f"only in {a_path}: {c['name']}")
            differ += 1
            continue
        ra = c.get("text", "ERROR: " + str(c.get("error")))
        rb = d.get("text", "ERROR: " + str(d.get("error")))
        if ra != rb:
            differ += 1
            print(f"differ: {c['name']}\n  {a['renderer']}: {ra!r}\n  {b['renderer']}: {rb!r}")
    print(f"compare: {len(a['cases'])} cases, {differ} differ")
    return differ


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--compare":
        sys.exit(1 if compare(sys.argv[2], sys.argv[3]) else 0)
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    render_all(sys.argv[1], sys.argv[2])
