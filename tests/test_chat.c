/* test_chat: chat templates (engine/chat.c) and the Jinja interpreter under them (engine/jinja*).
 *
 *   test_chat                                   interpreter and chat API unit tests (no node)
 *   test_chat GOLDEN_JSON CHAT_DIR [MODELS_DIR] also every golden case, byte for byte
 *   test_chat --dump-unit                       the unit cases as JSON lines (template, vars,
 *                                               expected), for checking against Python Jinja
 *   test_chat --render-lines                    renders JSON lines {template, vars} from stdin
 * (the last two feed tests/chat/check_python.py, which compares with Python Jinja directly)
 *
 * GOLDEN_JSON is what tests/chat/setup.sh renders from tests/chat/cases.json with
 * @huggingface/jinja (and transformers' own output where that one differs); CHAT_DIR is
 * tests/chat, where the template files live. MODELS_DIR (shared/models) adds the real
 * DeepSeek-R1-Distill tokenizer_config.json through chat_template_load. Exit 0 pass, 1 fail, 77
 * when GOLDEN_JSON is missing (node was not there to make it) and the unit tests passed. */
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "chat.h"
#include "jinja.h"

static int n_pass, n_fail;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (cond) {                                                                                \
            n_pass++;                                                                              \
        } else {                                                                                   \
            n_fail++;                                                                              \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                            \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
        }                                                                                          \
    } while (0)

/* Prints s with control characters escaped, at most max bytes. */
static void put_escaped(const char *s, size_t n, size_t max) {
    for (size_t i = 0; i < n && i < max; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n')
            fputs("\\n", stdout);
        else if (c == '\t')
            fputs("\\t", stdout);
        else if (c == '\\')
            fputs("\\\\", stdout);
        else if (c < 0x20)
            printf("\\x%02x", c);
        else
            putchar(c);
    }
    if (n > max) fputs("...", stdout);
}

/* Reports the first difference of two texts as a diff of the line it falls in. */
static void show_diff(const char *want, size_t want_len, const char *got, size_t got_len) {
    size_t i = 0;
    while (i < want_len && i < got_len && want[i] == got[i]) i++;
    size_t line = 1, bol = 0;
    for (size_t k = 0; k < i; k++)
        if (want[k] == '\n') line++, bol = k + 1;
    size_t from = i - bol > 60 ? i - 60 : bol;
    printf("  first difference at byte %zu (line %zu of the expected text)\n", i, line);
    printf("  - expected: ");
    put_escaped(want + from, want_len - from, i - from + 80);
    printf("\n  + rendered: ");
    put_escaped(got + from, got_len - from, i - from + 80);
    printf("\n");
}

/* ---- interpreter unit cases ---------------------------------------------------------------- */

struct unit {
    const char *tmpl, *vars, *want;
};

/* Each expectation is what Python Jinja renders under transformers' settings
 * (`test_chat --dump-unit` prints them for checking). */
static const struct unit units[] = {
    /* text, output, whitespace control, trim_blocks, lstrip_blocks */
    {"Hello {{ name }}!", "{\"name\": \"W\\u00f6rld\"}", "Hello Wörld!"},
    {"a\n  {% if true %}\n  b\n  {% endif %}\nc", NULL, "a\n  b\nc"},
    {"a  {%- if true -%}  b  {%- endif -%}  c", NULL, "abc"},
    {"x {{- ' y ' -}} z", NULL, "x y z"},
    {"{{ 1 }}\n{{ 2 }}\n", NULL, "1\n2"},
    {"a  {# comment #}\nb {#- c -#}   c", NULL, "a  bc"},
    {"  {% set x = 1 %}\n{{ x }}  {% if x %}y{% endif %}", NULL, "1  y"},
    {"{%+ if true %}k{% endif +%}\nx", NULL, "k\nx"},
    {"{% raw %}{{ not }} {% evaluated %}{% endraw %}", NULL, "{{ not }} {% evaluated %}"},
    {"line1\r\nline2\rline3", NULL, "line1\nline2\nline3"},
    {"{% generation %}gen{% endgeneration %}", NULL, "gen"},
    /* literals, str() of values */
    {"{{ none }} {{ true }} {{ False }} {{ 1.0 }} {{ 1e3 }} {{ 0.1 + 0.2 }} {{ 1e-7 }} {{ 1e22 }}",
     NULL, "None True False 1.0 1000.0 0.30000000000000004 1e-07 1e+22"},
    {"{{ [1, 'a', none, true, 2.5] }} {{ {'k': 'v', 'n': [1]} }} {{ (1,) }} {{ (1, 'x') }}", NULL,
     "[1, 'a', None, True, 2.5] {'k': 'v', 'n': [1]} (1,) (1, 'x')"},
    {"{{ [\"it's\", 'q\"', 'a\\nb'] }}", NULL, "[\"it's\", 'q\"', 'a\\nb']"},
    {"{{ 'a' 'b' \"c\" }} {{ '\\x41\\u00e9\\t|\\q' }}", NULL, "abc Aé\t|\\q"},
    /* operators */
    {"{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 % -3 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ 2 ** -1 }}",
     NULL, "3 -4 2 -2 3.5 1024 0.5"},
    {"{{ 7.5 // 2 }} {{ -7.5 % 2 }} {{ 1 + 2.0 }} {{ true + 1 }} {{ 3 * 'ab' }} {{ [0] * 3 }}",
     NULL, "3.0 0.5 3.0 2 ababab [0, 0, 0]"},
    {"{{ 1 ~ 'a' ~ none ~ undefined_thing }} {{ 'a' + 'b' }} {{ [1] + [2] }}", NULL,
     "1aNone ab [1, 2]"},
    {"{{ 1 < 2 < 3 }} {{ 1 < 3 < 2 }} {{ 'b' > 'a' }} {{ [1, 2] < [1, 3] }} {{ 1 == 1.0 }}", NULL,
     "True False True True True"},
    {"{{ 'a' in 'cat' }} {{ 'x' not in ['x'] }} {{ 'k' in {'k': 1} }} {{ 2 in [1, 2] }}", NULL,
     "True False True True"},
    {"{{ 0 or 'b' }} {{ 'a' and 'b' }} {{ '' and 'b' }} {{ not 0 }} {{ not x is defined }}", NULL,
     "b b  True True"},
    {"{{ 'y' if 1 > 2 else 'n' }} {{ 'y' if true }}|{{ 'y' if false }}|", NULL, "n y||"},
    {"{{ -(2) }} {{ -2 ** 2 }} {{ (-2) ** 2 }} {{ 10 - 2 - 3 }} {{ 2 + 3 * 4 }}", NULL,
     "-2 4 4 5 14"},
    {"{{ 'a' ~ (1 + 2) }} {{ 2 * 3 ~ 4 }} {{ 'a' ~ 'b' in 'xaby' }}", NULL, "a3 64 True"},
    /* variables, lookups, slicing */
    {"{{ m.role }} {{ m['role'] }} {{ m.missing }}|{{ m.missing is defined }}",
     "{\"m\": {\"role\": \"user\"}}", "user user |False"},
    {"{{ xs[0] }} {{ xs[-1] }} {{ xs[1:] }} {{ xs[:-1] }} {{ xs[::-1] }} {{ xs[::2] }} {{ xs.1 }}",
     "{\"xs\": [1, 2, 3]}", "1 3 [2, 3] [1, 2] [3, 2, 1] [1, 3] 2"},
    {"{{ s[0] }} {{ s[-1] }} {{ s[1:3] }} {{ s[::-1] }} {{ s|length }} {{ xs[9] is defined }}",
     "{\"s\": \"h\\u00e9llo\\u4e16\", \"xs\": []}", "h 世 él 世olléh 6 False"},
    {"{{ d.items() | list }} {{ d.keys() | list }} {{ d.values() | list }} {{ d.get('a') }} "
     "{{ d.get('z', 0) }} {{ d.get('z') }}",
     "{\"d\": {\"a\": 1, \"b\": 2}}", "[('a', 1), ('b', 2)] ['a', 'b'] [1, 2] 1 0 None"},
    {"{{ undefined_name }}|{{ undefined_name | default('dflt') }}|{{ undefined_name is defined }}|"
     "{{ undefined_name | length }}|{% for x in undefined_name %}x{% endfor %}|"
     "{{ undefined_name is none }}",
     NULL, "|dflt|False|0||False"},
    {"{{ none_val is none }} {{ none_val is not none }} {{ none_val | default('d') }} "
     "{{ none_val | default('d', true) }}",
     "{\"none_val\": null}", "True False None d"},
    /* set, scoping, namespace */
    {"{% set x = 1 %}{% for i in [1, 2] %}{{ x }}{% set x = 2 %}{{ x }}{% endfor %}{{ x }}", NULL,
     "12121"},
    {"{% if true %}{% set y = 'in-if' %}{% endif %}{{ y }}", NULL, "in-if"},
    {"{% set ns = namespace(n=0, s='') %}{% for i in range(4) %}{% set ns.n = ns.n + i %}"
     "{% set ns.s = ns.s ~ i %}{% endfor %}{{ ns.n }} {{ ns.s }}",
     NULL, "6 0123"},
    {"{% set a, b = 1, 2 %}{{ a }}{{ b }} {% set t = (3, 4) %}{% set c, d = t %}{{ d }}", NULL,
     "12 4"},
    {"{% set block %}x{{ 1 + 1 }}y{% endset %}[{{ block }}]", NULL, "[x2y]"},
    {"{% set messages = messages[1:] %}{{ messages | length }}", "{\"messages\": [1, 2, 3]}", "2"},
    /* loops */
    {"{% for x in xs %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}"
     "{{ loop.first }}{{ loop.last }}{{ loop.length }};{% endfor %}",
     "{\"xs\": [\"a\", \"b\"]}", "1021TrueFalse2;2110FalseTrue2;"},
    {"{% for x in [] %}x{% else %}empty{% endfor %} {% for x in [1] %}{{ x }}{% else %}e"
     "{% endfor %}",
     NULL, "empty 1"},
    {"{% for k, v in d.items() %}{{ k }}={{ v }},{% endfor %} {% for k, v in d | items %}{{ k }}"
     "{% endfor %} {% for k in d %}{{ k }}{% endfor %}",
     "{\"d\": {\"a\": 1, \"b\": 2}}", "a=1,b=2, ab ab"},
    {"{% for x in range(10) if x is odd %}{{ x }}{{ '' if loop.last else ',' }}{% endfor %}", NULL,
     "1,3,5,7,9"},
    {"{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 4 %}"
     "{% break %}{% endif %}{{ x }}{% endfor %}",
     NULL, "013"},
    {"{% for a in [1, 2] %}{% for b in 'xy' %}{{ a }}{{ b }}{{ loop.depth }}{% endfor %}"
     "{{ loop.depth }}{% endfor %}",
     NULL, "1x11y112x12y11"},
    {"{% for x in [1, 2, 3] %}{{ loop.previtem | default('-') }}{{ loop.nextitem | default('-') }} "
     "{% endfor %}",
     NULL, "-2 13 2- "},
    {"{% for c in 'ab' %}{{ c }}.{% endfor %}{{ range(2, 8, 3) | list }} "
     "{{ range(3, 0, -1) | list }}",
     NULL, "a.b.[2, 5] [3, 2, 1]"},
    /* filters */
    {"[{{ '\\u00a0\\u3000x\\u2003\\n' | trim }}] [{{ '  x \\n' | trim }}] "
     "[{{ 'xxaxx' | trim('x') }}] {{ 'aB' | upper }} {{ 'aB' | lower }} "
     "{{ 'hello wORLD' | title }} {{ 'hello World' | capitalize }}",
     NULL, "[x] [x] [a] AB ab Hello World Hello world"},
    {"{{ [1, 2] | join(', ') }} {{ ['a', 'b'] | join }} {{ users | join('/', attribute='n') }} "
     "{{ 5 | string }}{{ none | string }}",
     "{\"users\": [{\"n\": \"x\"}, {\"n\": \"y\"}]}", "1, 2 ab x/y 5None"},
    {"{{ [3, 1, 2] | sort | list }} {{ ['b', 'A', 'c'] | sort }} {{ ['b', 'A'] | sort(true) }} "
     "{{ [1, 2, 1, 3] | unique | list }} {{ [1, 2, 3] | reverse | list }} {{ 'abc' | reverse }}",
     NULL, "[1, 2, 3] ['A', 'b', 'c'] ['b', 'A'] [1, 2, 3] [3, 2, 1] cba"},
    {"{{ xs | first }} {{ xs | last }} {{ xs | length }} {{ xs | count }} {{ 'ab' | list }} "
     "{{ -3 | abs }} {{ '42' | int + 1 }} {{ '4.5' | float }} {{ 'x' | int }} {{ 3.7 | int }}",
     "{\"xs\": [4, 5, 6]}", "4 6 3 3 ['a', 'b'] 3 43 4.5 0 3"},
    {"{{ 2.5 | round }} {{ 3.5 | round }} {{ 2.675 | round(2) }} {{ 1.25 | round(1, 'ceil') }} "
     "{{ 7 | round }}",
     NULL, "2.0 4.0 2.67 1.3 7"},
    {"{{ ts | selectattr('on') | map(attribute='n') | list }} "
     "{{ ts | rejectattr('on') | map(attribute='n') | join }} "
     "{{ ts | selectattr('n', 'equalto', 'b') | list | length }} "
     "{{ ['a', 'b', 'c'] | reject('equalto', 'b') | join(',') }} {{ [0, 1, 2] | select | list }} "
     "{{ ['a', 'B'] | map('upper') | join }}",
     "{\"ts\": [{\"n\": \"a\", \"on\": true}, {\"n\": \"b\", \"on\": false}]}",
     "['a'] b 1 a,c [1, 2] AB"},
    {"{{ 'a-b-a' | replace('a', 'x') }} {{ 'aaa' | replace('a', 'b', 2) }} {{ 'x' | safe }}", NULL,
     "x-b-x bba x"},
    /* tojson: json.dumps(ensure_ascii=False) */
    {"{{ v | tojson }}",
     "{\"v\": {\"s\": \"\\u00e9\\\"\\\\\\n\\u0001<>&'\", \"n\": [1, 2.5, true, "
     "null], \"e\": {}, \"l\": []}}",
     "{\"s\": \"é\\\"\\\\\\n\\u0001<>&'\", \"n\": [1, 2.5, true, null], \"e\": {}, \"l\": []}"},
    {"{{ v | tojson(indent=2) }}", "{\"v\": {\"a\": [1, {\"b\": null}], \"e\": []}}",
     "{\n  \"a\": [\n    1,\n    {\n      \"b\": null\n    }\n  ],\n  \"e\": []\n}"},
    {"{{ v | tojson(sort_keys=true, separators=(',', ':')) }} "
     "{{ 'é' | tojson(ensure_ascii=true) }}",
     "{\"v\": {\"b\": 1, \"a\": [1, 2]}}", "{\"a\":[1,2],\"b\":1} \"\\u00e9\""},
    {"{{ 1.0 | tojson }} {{ 'x' | tojson }} {{ (1, 2) | tojson }}", NULL, "1.0 \"x\" [1, 2]"},
    /* tests */
    {"{{ 's' is string }}{{ 1 is number }}{{ 1.5 is float }}{{ 1 is integer }}{{ true is integer }}"
     "{{ {} is mapping }}{{ 'x' is iterable }}{{ [] is sequence }}{{ 3 is mapping }}",
     NULL, "TrueTrueTrueTrueFalseTrueTrueTrueFalse"},
    {"{{ true is true }}{{ 1 is true }}{{ false is false }}{{ 0 is false }}{{ true is boolean }}"
     "{{ 'a' is equalto 'a' }}{{ 4 is divisibleby 2 }}{{ 3 is even }}{{ 'ab' is lower }}"
     "{{ 'AB' is upper }}{{ 2 is in [1, 2] }}{{ 'x' is not in 'abc' }}",
     NULL, "TrueFalseTrueFalseTrueTrueTrueFalseTrueTrueTrueTrue"},
    /* string methods */
    {"{{ 'a,b,,c'.split(',') }} {{ ' a  b '.split() }} {{ 'a b c'.split(none, 1) }} "
     "{{ 'a,b,c'.rsplit(',', 1) }} {{ 'x'.split('x') }}",
     NULL, "['a', 'b', '', 'c'] ['a', 'b'] ['a', 'b c'] ['a,b', 'c'] ['', '']"},
    {"[{{ '\\n\\n x \\n'.strip() }}] [{{ '\\n x \\n'.lstrip('\\n') }}] [{{ ' x "
     "\\n\\n'.rstrip('\\n') }}] "
     "[{{ 'xyhixy'.strip('xy') }}]",
     NULL, "[x] [ x \n] [ x ] [hi]"},
    {"{{ 'abc'.startswith('ab') }} {{ 'abc'.endswith(('x', 'c')) }} {{ 'abc'.replace('b', 'B') }} "
     "{{ 'abc'.upper() }} {{ 'ÉCOLE'.lower() }} {{ '3rd x\\'s'.title() }} {{ 'aBC'.capitalize() }}",
     NULL, "True True aBc ABC école 3Rd X'S Abc"},
    {"{{ 'hello'.find('l') }} {{ 'hello'.find('z') }} {{ 'hello'.count('l') }} {{ '-'.join(['a', "
     "'b']) }} {{ 'x</think>y</think>z'.split('</think>')[-1] }}",
     NULL, "2 -1 2 a-b z"},
    /* macros */
    {"{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('a') }} "
     "{{ greet('b', '?') }} {{ greet(punct='.', name='c') }}",
     NULL, "Hi a! Hi b? Hi c."},
    {"{% macro f(n) %}{% if n > 0 %}{{ n }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(3) }}", NULL,
     "321"},
    /* HF specifics */
    {"{{ strftime_now('%Y-%m-%d %b') }} {{ strftime_now is defined }}", NULL,
     "2024-07-26 Jul True"},
    {"{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}"
     "{% endif %}{{ add_generation_prompt }}",
     NULL, "False"},
};

/* Templates that must fail: at load (TL_ERR_FORMAT / TL_ERR_UNSUPPORTED) or when rendered. */
struct bad {
    const char *tmpl, *vars;
    enum tl_status parse, render;
    const char *msg; /* a substring of the message */
};

static const struct bad bads[] = {
    {"{{ x | frobnicate }}", NULL, TL_ERR_UNSUPPORTED, TL_OK,
     "unsupported Jinja filter 'frobnicate' at line 1"},
    {"\n{% if x is prime %}{% endif %}", NULL, TL_ERR_UNSUPPORTED, TL_OK,
     "unsupported Jinja test 'prime' at line 2"},
    {"{% include 'other.jinja' %}", NULL, TL_ERR_UNSUPPORTED, TL_OK,
     "unsupported Jinja tag 'include' at line 1"},
    {"{{ 'a {}'.format(1) }}", NULL, TL_ERR_UNSUPPORTED, TL_OK,
     "unsupported Jinja method 'format'"},
    {"{{ lipsum(2) }}", NULL, TL_ERR_UNSUPPORTED, TL_OK, "unsupported Jinja function 'lipsum'"},
    {"{% for x in y recursive %}{% endfor %}", NULL, TL_ERR_UNSUPPORTED, TL_OK, "recursive"},
    {"{{ f(*args) }}", NULL, TL_ERR_UNSUPPORTED, TL_OK, "*args"},
    {"{% if x %}never closed", NULL, TL_ERR_FORMAT, TL_OK, "'if' at line 1 is never closed"},
    {"{% endfor %}", NULL, TL_ERR_FORMAT, TL_OK, "'endfor' without a matching opening tag"},
    {"{{ 'unterminated }}", NULL, TL_ERR_FORMAT, TL_OK, "unterminated string at line 1"},
    {"{{ 1 + }}", NULL, TL_ERR_FORMAT, TL_OK, "expected an expression, got '}}'"},
    {"{% break %}", NULL, TL_ERR_FORMAT, TL_OK, "'break' outside a loop"},
    {"{{ x }", NULL, TL_ERR_FORMAT, TL_OK, "unbalanced '}' at line 1"},
    {"{{ x", NULL, TL_ERR_FORMAT, TL_OK, "the {{ opened at line 1 is not closed"},
    {"{{ 1 + 2 ~ 3 }}", NULL, TL_OK, TL_ERR_INVALID, "unsupported operand type(s) for +"},
    {"{{ raise_exception('Conversation roles must alternate user/assistant') }}", NULL, TL_OK,
     TL_ERR_INVALID, "Conversation roles must alternate user/assistant"},
    {"{{ messages[0].role }}", "{\"messages\": []}", TL_OK, TL_ERR_INVALID,
     "list index out of range"},
    {"{{ x.y }}", NULL, TL_OK, TL_ERR_INVALID, "'x' is undefined"},
    {"{{ x + 1 }}", NULL, TL_OK, TL_ERR_INVALID, "'x' is undefined"},
    {"{{ 'a' + 1 }}", NULL, TL_OK, TL_ERR_INVALID, "can only concatenate str"},
    {"{{ 1 / 0 }}", NULL, TL_OK, TL_ERR_INVALID, "division by zero"},
    {"{{ u | int }}", NULL, TL_OK, TL_ERR_INVALID, "'u' is undefined"},
    {"{{ 1 < 'a' }}", NULL, TL_OK, TL_ERR_INVALID, "not supported between"},
    {"{{ none | length }}", NULL, TL_OK, TL_ERR_INVALID, "has no len()"},
    {"{{ x | tojson }}", NULL, TL_OK, TL_ERR_INVALID, "Undefined is not JSON serializable"},
    {"{% set x = 1 %}{% set x.a = 2 %}", NULL, TL_OK, TL_ERR_INVALID, "non-namespace"},
    {"{{ 9223372036854775807 + 1 }}", NULL, TL_OK, TL_ERR_INVALID, "exceeds 64 bits"},
    /* hostile templates: every one stops at a cap instead of running away */
    {"{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}", NULL,
     TL_OK, TL_ERR_INVALID, "steps"},
    {"{{ range(1000000) | length }}", NULL, TL_OK, TL_ERR_INVALID, "Range too big"},
    {"{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", NULL, TL_OK, TL_ERR_INVALID,
     "macro calls nest deeper than"},
    {"{% set ns = namespace(s='xxxxxxxxxxxxxxxx') %}{% for i in range(40) %}"
     "{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
     NULL, TL_OK, TL_ERR_NOMEM, "memory"},
    {"{{ 'x' * 100000000000 }}", NULL, TL_OK, TL_ERR_INVALID, "exceeds the memory cap"},
    {"{% set ns = namespace(x=[]) %}{% for i in range(20000) %}{% set ns.x = [ns.x] %}{% endfor %}"
     "{{ ns.x == ns.x }}",
     NULL, TL_OK, TL_ERR_INVALID, "nested deeper than"},
    {"{% set ns = namespace(x=[]) %}{% for i in range(20000) %}{% set ns.x = [ns.x] %}{% endfor %}"
     "{{ ns.x | tojson }}",
     NULL, TL_OK, TL_ERR_INVALID, "nests deeper than"},

    {"{% for i in range(100000) %}{{ 'y' * 10000 }}{% endfor %}", NULL, TL_OK, TL_ERR_INVALID,
     "output exceeds"},
};

static const struct jinja_limits unit_limits = {
    .max_output_bytes = 8u << 20,
    .max_memory_bytes = 256u << 20,
    .max_steps = 1000000,
    .max_call_depth = 32,
    .now = 1721995200, /* 2024-07-26 12:00:00 UTC */
};

static enum tl_status render_jinja(const char *tmpl, const char *vars_json, char **out, size_t *len,
                                   struct tl_err *err, enum tl_status *parse_status) {
    struct jinja_template *t = NULL;
    *out = NULL;
    *parse_status = jinja_template_parse(tmpl, strlen(tmpl), &t, err);
    if (*parse_status != TL_OK) return *parse_status;
    json_t *vars = NULL;
    if (vars_json) {
        json_error_t je;
        vars = json_loads(vars_json, 0, &je);
        if (!vars) {
            jinja_template_free(t);
            snprintf(err->msg, sizeof err->msg, "bad test vars: %s", je.text);
            return TL_ERR_INTERNAL;
        }
    }
    enum tl_status st = jinja_template_render(t, vars, &unit_limits, out, len, err);
    json_decref(vars);
    jinja_template_free(t);
    return st;
}

static void test_units(void) {
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        const struct unit *u = &units[i];
        char *out;
        size_t len;
        struct tl_err err = {{0}};
        enum tl_status parse;
        enum tl_status st = render_jinja(u->tmpl, u->vars, &out, &len, &err, &parse);
        if (st != TL_OK) {
            CHECK(false, "unit %zu %s failed: %s (%s)", i, u->tmpl, tl_status_str(st), err.msg);
            continue;
        }
        bool ok = len == strlen(u->want) && !memcmp(out, u->want, len);
        CHECK(ok, "unit %zu: %s", i, u->tmpl);
        if (!ok) show_diff(u->want, strlen(u->want), out, len);
        free(out);
    }
    for (size_t i = 0; i < sizeof bads / sizeof bads[0]; i++) {
        const struct bad *b = &bads[i];
        char *out;
        size_t len;
        struct tl_err err = {{0}};
        enum tl_status parse;
        enum tl_status st = render_jinja(b->tmpl, b->vars, &out, &len, &err, &parse);
        free(out);
        enum tl_status want = b->parse != TL_OK ? b->parse : b->render;
        bool ok = parse == b->parse && st == want && strstr(err.msg, b->msg);
        CHECK(ok, "bad %zu %s: got %s/%s \"%s\", want %s with \"%s\"", i, b->tmpl,
              tl_status_str(parse), tl_status_str(st), err.msg, tl_status_str(want), b->msg);
    }
}

/* Parsing never reads past the source it is given, and deep nesting is refused, not recursed. */
static void test_hostile_parse(void) {
    size_t n = 100000;
    char *deep = malloc(n * 2 + 16);
    strcpy(deep, "{{ ");
    size_t k = 3;
    for (size_t i = 0; i < n; i++) deep[k++] = '(';
    deep[k++] = '1';
    for (size_t i = 0; i < n; i++) deep[k++] = ')';
    strcpy(deep + k, " }}");
    struct jinja_template *t = NULL;
    struct tl_err err = {{0}};
    enum tl_status st = jinja_template_parse(deep, strlen(deep), &t, &err);
    CHECK(st == TL_ERR_UNSUPPORTED && strstr(err.msg, "nests deeper"), "deep nesting: %s", err.msg);
    jinja_template_free(t);
    free(deep);
    const char unterminated[] = {'{', '{', ' ', '\'', 'a'}; /* no NUL: length is the bound */
    st = jinja_template_parse(unterminated, sizeof unterminated, &t, &err);
    CHECK(st == TL_ERR_FORMAT, "unterminated, unbounded source: %s", err.msg);
    /* recursion through macros whose bodies nest deep: the evaluation depth cap stops it
     * before the C stack runs out */
    char rec[1024];
    int k2 = snprintf(rec, sizeof rec, "{%% macro f(n) %%}{{ ");
    for (int i = 0; i < 60; i++) rec[k2++] = '[';
    k2 += snprintf(rec + k2, sizeof rec - (size_t)k2, "f(n + 1)");
    for (int i = 0; i < 60; i++) rec[k2++] = ']';
    snprintf(rec + k2, sizeof rec - (size_t)k2, " }}{%% endmacro %%}{{ f(0) }}");
    st = jinja_template_parse(rec, strlen(rec), &t, &err);
    CHECK(st == TL_OK, "parse: %s", err.msg);
    if (st != TL_OK) return;
    char *rec_out = NULL;
    size_t rec_len;
    st = jinja_template_render(t, NULL, NULL, &rec_out, &rec_len, &err);
    CHECK(st == TL_ERR_INVALID && strstr(err.msg, "nests (expressions, blocks and macro calls"),
          "deep macro recursion: %s", err.msg);
    free(rec_out);
    jinja_template_free(t);
    /* variables nested deeper than the interpreter recurses */
    json_t *deep_vars = json_array(), *inner = deep_vars;
    for (int i = 0; i < 600; i++) {
        json_t *a = json_array();
        json_array_append_new(inner, a);
        inner = a;
    }
    json_t *vars = json_pack("{s:o}", "v", deep_vars);
    st = jinja_template_parse("{{ v }}", 7, &t, &err);
    CHECK(st == TL_OK, "parse: %s", err.msg);
    if (st != TL_OK) return;
    char *out = NULL;
    size_t len;
    st = jinja_template_render(t, vars, NULL, &out, &len, &err);
    CHECK(st == TL_ERR_INVALID && strstr(err.msg, "nest deeper"), "deep variables: %s", err.msg);
    free(out);
    jinja_template_free(t);
    json_decref(vars);
    const char bad_utf8[] = "caf\xc3";
    st = jinja_template_parse(bad_utf8, strlen(bad_utf8), &t, &err);
    CHECK(st == TL_ERR_FORMAT && strstr(err.msg, "UTF-8"), "invalid UTF-8 template: %s", err.msg);
}

/* ---- chat API ---------------------------------------------------------------------------------
 */

static char *render_chat(const struct chat_template *t, const struct chat_message *m, int n,
                         bool agp, int thinking, enum tl_status *st, struct tl_err *err) {
    struct chat_options o = {.add_generation_prompt = agp, .enable_thinking = thinking};
    char *text = NULL;
    size_t len = 0;
    *st = chat_template_render(t, m, n, &o, &text, &len, err);
    if (*st == TL_OK && strlen(text) != len) {
        free(text);
        *st = TL_ERR_INTERNAL;
        return NULL;
    }
    return text;
}

static bool write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) return false;
    bool ok = fputs(text, f) >= 0;
    return fclose(f) == 0 && ok;
}

static void test_chat_api(void) {
    static const char qwen_like[] =
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% if enable_thinking is defined and "
        "enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
        "{{ bos_token is defined }}{{ tools is none }}";
    struct chat_message msgs[] = {{"user", "hi", NULL}};
    struct chat_template *t = NULL;
    struct tl_err err = {{0}};
    enum tl_status st = chat_template_from_string(qwen_like, NULL, "<|im_end|>", &t, &err);
    CHECK(st == TL_OK, "from_string: %s", err.msg);
    if (st != TL_OK) return;
    char *s = render_chat(t, msgs, 1, true, -1, &st, &err);
    CHECK(st == TL_OK && !strcmp(s, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
                                    "FalseTrue"),
          "chat render: %s", s ? s : err.msg);
    free(s);
    s = render_chat(t, msgs, 1, true, 0, &st, &err);
    CHECK(st == TL_OK && strstr(s, "<think>\n\n</think>\n\n"), "enable_thinking=false: %s",
          s ? s : err.msg);
    free(s);
    struct chat_message bad_utf8[] = {{"user", "\xff\xfe", NULL}};
    s = render_chat(t, bad_utf8, 1, false, -1, &st, &err);
    CHECK(st == TL_ERR_INVALID && strstr(err.msg, "UTF-8"), "invalid UTF-8 content: %s", err.msg);
    free(s);
    struct chat_message no_content[] = {{"user", NULL, NULL}};
    s = render_chat(t, no_content, 1, false, -1, &st, &err);
    CHECK(st == TL_ERR_INVALID, "NULL content: %s", err.msg);
    free(s);
    chat_template_free(t);

    st = chat_template_from_string("{{ messages | frobnicate }}", NULL, NULL, &t, &err);
    CHECK(st == TL_ERR_UNSUPPORTED && strstr(err.msg, "frobnicate") && strstr(err.msg, "Qwen2.5"),
          "unsupported construct names it and the families: %s", err.msg);

    st = chat_template_from_string("{{ raise_exception('System role not supported') }}", NULL, NULL,
                                   &t, &err);
    CHECK(st == TL_OK, "raise template loads: %s", err.msg);
    if (st == TL_OK) {
        s = render_chat(t, msgs, 1, false, -1, &st, &err);
        CHECK(st == TL_ERR_INVALID && strstr(err.msg, "System role not supported"),
              "raise_exception: %s", err.msg);
        free(s);
        chat_template_free(t);
    }

    /* chat_template_load: the forms tokenizer_config.json takes */
    char dir[] = "/tmp/test_chat_XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(false, "mkdtemp: %s", strerror(errno));
        return;
    }
    char cfg[512], jin[512];
    snprintf(cfg, sizeof cfg, "%s/tokenizer_config.json", dir);
    snprintf(jin, sizeof jin, "%s/chat_template.jinja", dir);
    struct {
        const char *config, *jinja, *want;
        enum tl_status st;
        const char *msg;
    } loads[] = {
        {"{\"bos_token\": \"<s>\", \"eos_token\": \"</s>\", \"chat_template\": \"{{ bos_token }}"
         "{{ messages[0].content }}{{ eos_token }}\"}",
         NULL, "<s>hi</s>", TL_OK, NULL},
        {"{\"bos_token\": {\"__type\": \"AddedToken\", \"content\": \"<B>\", \"lstrip\": false}, "
         "\"eos_token\": null, \"chat_template\": [{\"name\": \"tool_use\", \"template\": \"T\"}, "
         "{\"name\": \"default\", \"template\": \"{{ bos_token }}D{{ eos_token is defined }}\"}]}",
         NULL, "<B>DFalse", TL_OK, NULL},
        {"{\"bos_token\": \"<s>\", \"chat_template\": \"from config\"}",
         "{{ bos_token }}jinja file", "<s>jinja file", TL_OK, NULL},
        {"{\"chat_template\": [{\"name\": \"rag\", \"template\": \"R\"}]}", NULL, NULL,
         TL_ERR_UNSUPPORTED, "none named 'default'"},
        {"{\"eos_token\": \"</s>\"}", NULL, NULL, TL_ERR_UNSUPPORTED, "no chat_template"},
        {"{\"chat_template\": 42}", NULL, NULL, TL_ERR_FORMAT, "neither a string nor a list"},
        {"{\"chat_template\": \"x\", \"bos_token\": 1}", NULL, NULL, TL_ERR_FORMAT, "bos_token"},
        {"{not json", NULL, NULL, TL_ERR_FORMAT, "tokenizer_config.json"},
        {"{\"chat_template\": \"{% include 'x' %}\"}", NULL, NULL, TL_ERR_UNSUPPORTED,
         "tokenizer_config.json: chat template: unsupported Jinja tag 'include' at line 1"},
    };
    for (size_t i = 0; i < sizeof loads / sizeof loads[0]; i++) {
        unlink(jin);
        bool ok = write_file(cfg, loads[i].config) &&
                  (!loads[i].jinja || write_file(jin, loads[i].jinja));
        CHECK(ok, "writing %s", dir);
        st = chat_template_load(dir, &t, &err);
        if (loads[i].st != TL_OK) {
            CHECK(st == loads[i].st && strstr(err.msg, loads[i].msg), "load %zu: %s: %s", i,
                  tl_status_str(st), err.msg);
            chat_template_free(t);
            continue;
        }
        CHECK(st == TL_OK, "load %zu: %s", i, err.msg);
        if (st != TL_OK) continue;
        s = render_chat(t, msgs, 1, false, -1, &st, &err);
        CHECK(st == TL_OK && !strcmp(s, loads[i].want), "load %zu renders %s, want %s", i,
              s ? s : err.msg, loads[i].want);
        free(s);
        chat_template_free(t);
    }
    unlink(jin);
    unlink(cfg);
    st = chat_template_load(dir, &t, &err);
    CHECK(st == TL_ERR_IO && strstr(err.msg, "neither"), "empty dir: %s", err.msg);
    rmdir(dir);
}

/* ---- golden cases ------------------------------------------------------------------------------
 */

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) buf[n] = '\0';
    if (len) *len = (size_t)n;
    return buf;
}

struct family {
    char name[64];
    int pass, fail;
};

static struct family *family_of(struct family *fams, int *n_fams, const char *name) {
    for (int i = 0; i < *n_fams; i++)
        if (!strcmp(fams[i].name, name)) return &fams[i];
    if (*n_fams == 32) return &fams[31];
    struct family *f = &fams[(*n_fams)++];
    memset(f, 0, sizeof *f);
    snprintf(f->name, sizeof f->name, "%s", name ? name : "?");
    return f;
}

/* Writes a tokenizer_config.json for the template into a fresh directory (special tokens as
 * AddedToken objects, as DeepSeek ships them) and loads it back through chat_template_load. */
static struct chat_template *load_via_dir(const char *source, const json_t *bos, const json_t *eos,
                                          struct tl_err *err) {
    char dir[] = "/tmp/test_chat_cfg_XXXXXX";
    if (!mkdtemp(dir)) return NULL;
    json_t *cfg = json_object();
    json_object_set_new(cfg, "chat_template", json_string(source));
    if (json_is_string(bos))
        json_object_set_new(
            cfg, "bos_token",
            json_pack("{s:s,s:s}", "__type", "AddedToken", "content", json_string_value(bos)));
    if (json_is_string(eos)) json_object_set(cfg, "eos_token", (json_t *)eos);
    char path[256];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    struct chat_template *t = NULL;
    if (json_dump_file(cfg, path, JSON_INDENT(2)) == 0) chat_template_load(dir, &t, err);
    json_decref(cfg);
    unlink(path);
    rmdir(dir);
    return t;
}

static int run_golden(const char *golden_path, const char *chat_dir, const char *models_dir) {
    json_error_t je;
    json_t *doc = json_load_file(golden_path, 0, &je);
    if (!doc) {
        printf("FAIL %s:%d: %s\n", golden_path, je.line, je.text);
        n_fail++;
        return -1;
    }
    printf("golden: %s (%s)\n", golden_path, json_string_value(json_object_get(doc, "renderer")));
    struct chat_template *r1 = NULL;
    if (models_dir) {
        char dir[1024];
        struct tl_err err = {{0}};
        snprintf(dir, sizeof dir, "%s/DeepSeek-R1-Distill-Qwen-14B", models_dir);
        enum tl_status st = chat_template_load(dir, &r1, &err);
        CHECK(st == TL_OK, "loading %s: %s", dir, err.msg);
    }
    struct family fams[32];
    int n_fams = 0;
    json_t *cases = json_object_get(doc, "cases");
    size_t i;
    json_t *c;
    json_array_foreach(cases, i, c) {
        const char *name = json_string_value(json_object_get(c, "name"));
        const char *tid = json_string_value(json_object_get(c, "template"));
        const char *kind = json_string_value(json_object_get(c, "kind"));
        struct family *fam = family_of(fams, &n_fams, tid);
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", chat_dir,
                 json_string_value(json_object_get(c, "file")));
        size_t src_len;
        char *src = slurp(path, &src_len);
        if (!src) {
            printf("FAIL %s: cannot read %s\n", name, path);
            n_fail++;
            fam->fail++;
            continue;
        }
        const json_t *want_text = json_object_get(c, "text");
        const char *expect_error = json_string_value(json_object_get(c, "expect_error"));
        /* each chat case renders three ways: from the string, through a written
         * tokenizer_config.json, and (DeepSeek-R1) through the real shared config */
        int ways = 1;
        struct chat_template *via[3] = {NULL, NULL, NULL};
        struct tl_err err = {{0}};
        bool ok = true;
        char *outs[3] = {NULL, NULL, NULL};
        size_t lens[3] = {0, 0, 0};
        enum tl_status sts[3] = {TL_OK, TL_OK, TL_OK};
        if (!strcmp(kind, "chat")) {
            const json_t *bos = json_object_get(c, "bos_token"),
                         *eos = json_object_get(c, "eos_token");
            sts[0] = chat_template_from_string(src, json_string_value(bos), json_string_value(eos),
                                               &via[0], &err);
            via[1] = load_via_dir(src, bos, eos, &err);
            ways = 2;
            if (r1 && !strcmp(tid, "deepseek-r1-distill")) via[ways++] = r1;
            json_t *jm = json_object_get(c, "messages");
            size_t n = json_array_size(jm);
            struct chat_message *msgs = calloc(n + 1, sizeof *msgs);
            for (size_t k = 0; k < n; k++) {
                json_t *m = json_array_get(jm, k);
                msgs[k].role = json_string_value(json_object_get(m, "role"));
                msgs[k].content = json_string_value(json_object_get(m, "content"));
                msgs[k].reasoning_content =
                    json_string_value(json_object_get(m, "reasoning_content"));
            }
            const json_t *think = json_object_get(c, "enable_thinking");
            struct chat_options o = {
                .add_generation_prompt = json_is_true(json_object_get(c, "add_generation_prompt")),
                .enable_thinking = json_is_boolean(think) ? json_is_true(think) : -1,
            };
            for (int w = 0; w < ways; w++) {
                if (!via[w]) {
                    sts[w] = sts[w] != TL_OK ? sts[w] : TL_ERR_INTERNAL;
                    continue;
                }
                sts[w] = chat_template_render(via[w], msgs, (int)n, &o, &outs[w], &lens[w], &err);
            }
            free(msgs);
        } else {
            struct jinja_template *t = NULL;
            sts[0] = jinja_template_parse(src, src_len, &t, &err);
            if (sts[0] == TL_OK)
                sts[0] = jinja_template_render(t, json_object_get(c, "vars"), &unit_limits,
                                               &outs[0], &lens[0], &err);
            jinja_template_free(t);
        }
        for (int w = 0; w < ways; w++) {
            static const char *const how[] = {"from_string", "tokenizer_config.json",
                                              "shared config"};
            if (expect_error || !want_text) {
                bool good = sts[w] == TL_ERR_INVALID &&
                            (!expect_error || strstr(err.msg, expect_error) != NULL);
                if (!good) {
                    printf("FAIL %s (%s): want an error \"%s\", got %s %s\n", name, how[w],
                           expect_error ? expect_error : "(renderer failed)", tl_status_str(sts[w]),
                           sts[w] == TL_OK ? "" : err.msg);
                    ok = false;
                }
                continue;
            }
            const char *want = json_string_value(want_text);
            size_t want_len = json_string_length(want_text);
            if (sts[w] != TL_OK) {
                printf("FAIL %s (%s): %s: %s\n", name, how[w], tl_status_str(sts[w]), err.msg);
                ok = false;
            } else if (lens[w] != want_len || memcmp(outs[w], want, want_len)) {
                printf("FAIL %s (%s): text differs\n", name, how[w]);
                show_diff(want, want_len, outs[w], lens[w]);
                ok = false;
            }
        }
        for (int w = 0; w < 3; w++) free(outs[w]);
        chat_template_free(via[0]);
        chat_template_free(via[1]);
        free(src);
        if (ok)
            n_pass++, fam->pass++;
        else
            n_fail++, fam->fail++;
    }
    for (int f = 0; f < n_fams; f++)
        printf("  %-22s %3d/%d cases identical\n", fams[f].name, fams[f].pass,
               fams[f].pass + fams[f].fail);
    chat_template_free(r1);
    json_decref(doc);
    return 0;
}

/* Reads JSON lines {"template": ..., "vars": {...}} and writes {"text": ...} or {"error": ...}
 * per line: the C side of check_python.py's differential runs. */
static int render_lines(void) {
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, stdin) > 0) {
        json_error_t je;
        json_t *c = json_loads(line, 0, &je), *res = json_object();
        const char *src = json_string_value(json_object_get(c, "template"));
        if (!src) {
            fprintf(stderr, "render_lines: bad input line: %s\n", je.text);
            json_decref(c);
            json_decref(res);
            free(line);
            return 2;
        }
        struct jinja_template *t = NULL;
        struct tl_err err = {{0}};
        char *out = NULL;
        size_t len = 0;
        enum tl_status st = jinja_template_parse(src, strlen(src), &t, &err);
        if (st == TL_OK)
            st = jinja_template_render(t, json_object_get(c, "vars"), &unit_limits, &out, &len,
                                       &err);
        if (st == TL_OK)
            json_object_set_new(res, "text", json_stringn(out, len));
        else
            json_object_set_new(res, "error", json_string(err.msg));
        char *s = json_dumps(res, JSON_COMPACT);
        printf("%s\n", s);
        free(s);
        free(out);
        jinja_template_free(t);
        json_decref(res);
        json_decref(c);
    }
    free(line);
    return 0;
}

static void dump_units(void) {
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        json_t *o =
            json_pack("{s:s,s:s,s:o}", "template", units[i].tmpl, "want", units[i].want, "vars",
                      units[i].vars ? json_loads(units[i].vars, 0, NULL) : json_object());
        char *s = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
        printf("%s\n", s);
        free(s);
        json_decref(o);
    }
}

int main(int argc, char **argv) {
    setenv("TZ", "UTC", 1); /* strftime_now reads local time */
    tzset();
    if (argc == 2 && !strcmp(argv[1], "--dump-unit")) {
        dump_units();
        return 0;
    }
    if (argc == 2 && !strcmp(argv[1], "--render-lines")) return render_lines();
    if (argc != 1 && argc != 3 && argc != 4) {
        fprintf(stderr,
                "usage: %s [GOLDEN_JSON CHAT_DIR [MODELS_DIR]] | --dump-unit | --render-lines\n",
                argv[0]);
        return 2;
    }
    test_units();
    test_hostile_parse();
    test_chat_api();
    printf("unit: %d passed, %d failed\n", n_pass, n_fail);
    if (argc >= 3) {
        struct stat sb;
        if (stat(argv[1], &sb) != 0) {
            printf("golden file %s is missing (run tests/chat/setup.sh; it needs node and npm)\n",
                   argv[1]);
            printf("%d passed, %d failed, 1 skipped\n", n_pass, n_fail);
            return n_fail ? 1 : 77;
        }
        run_golden(argv[1], argv[2], argc == 4 ? argv[3] : NULL);
    }
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
