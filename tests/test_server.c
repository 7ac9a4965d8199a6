/* test_server: the server's pure parts without a socket: request parsing and validation
 * (forms of prompts, vLLM's defaults and messages, refusals), vLLM's context-length wording,
 * the deepseek_r1 reasoning split over every way a stream can cut it, the Prometheus text, the
 * error / chunk JSON and SSE framing. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "oai_request.h"
#include "oai_response.h"
#include "prompt.h"
#include "reasoning.h"

static const struct oai_limits lim = {
    .max_choices = 16, .vocab_size = 1000, .max_messages = 64, .default_max_new = 0};

static struct engine_params defaults(void) {
    struct engine_params p;
    engine_params_default(&p);
    p.sp.temperature = 0.7f; /* as a generation_config.json would set it */
    return p;
}

/* Parses body; returns the status, with the message and param kept for the asserts. */
static char last_msg[TL_ERR_MSG_MAX], last_param[64];
static enum tl_status parse(enum oai_kind k, const char *body, struct oai_request *r) {
    struct engine_params d = defaults();
    struct tl_err err = {{0}};
    enum tl_status st =
        oai_request_parse(k, body, strlen(body), &d, &lim, r, last_param, sizeof last_param, &err);
    snprintf(last_msg, sizeof last_msg, "%s", err.msg);
    return st;
}

static void expect_refused(enum oai_kind k, const char *body, const char *param,
                           const char *fragment) {
    struct oai_request r;
    if (parse(k, body, &r) == TL_OK) {
        oai_request_free(&r);
        fail_msg("accepted: %s", body);
    }
    if (!strstr(last_msg, fragment))
        fail_msg("%s: message '%s' lacks '%s'", body, last_msg, fragment);
    if (param && strcmp(last_param, param))
        fail_msg("%s: param '%s', wanted '%s'", body, last_param, param);
}

static void test_prompt_forms(void **state) {
    (void)state;
    struct oai_request r;
    assert_int_equal(parse(OAI_COMPLETION, "{\"prompt\":\"Hello\",\"model\":\"m\"}", &r), TL_OK);
    assert_int_equal(r.n_prompts, 1);
    assert_string_equal(r.prompts[0].text, "Hello");
    assert_string_equal(r.model, "m");
    assert_int_equal(r.params.max_tokens, 16); /* vLLM's completions default */
    assert_false(r.max_tokens_set);
    assert_true(r.add_special_tokens);
    assert_true(fabsf(r.params.sp.temperature - 0.7f) < 1e-6); /* the server's default */
    oai_request_free(&r);

    assert_int_equal(parse(OAI_COMPLETION, "{\"prompt\":[\"a\",\"b\",\"c\"]}", &r), TL_OK);
    assert_int_equal(r.n_prompts, 3);
    assert_string_equal(r.prompts[2].text, "c");
    oai_request_free(&r);

    assert_int_equal(parse(OAI_COMPLETION, "{\"prompt\":[1,2,999]}", &r), TL_OK);
    assert_int_equal(r.n_prompts, 1);
    assert_null(r.prompts[0].text);
    assert_int_equal(r.prompts[0].n_ids, 3);
    assert_int_equal(r.prompts[0].ids[2], 999);
    oai_request_free(&r);

    assert_int_equal(parse(OAI_COMPLETION, "{\"prompt\":[[1],[2,3]],\"n\":2}", &r), TL_OK);
    assert_int_equal(r.n_prompts, 2);
    assert_int_equal(r.prompts[1].n_ids, 2);
    assert_int_equal(r.n, 2);
    oai_request_free(&r);
}

static void test_fields(void **state) {
    (void)state;
    struct oai_request r;
    assert_int_equal(
        parse(OAI_COMPLETION,
              "{\"prompt\":\"x\",\"max_tokens\":32.0,\"temperature\":0,\"top_p\":0.5,\"top_k\":-1,"
              "\"min_p\":0.1,\"seed\":-7,\"stop\":[\"a\",\"bc\"],\"stop_token_ids\":[5],"
              "\"ignore_eos\":true,\"min_tokens\":3,\"logprobs\":2,\"echo\":false,"
              "\"stream\":true,\"stream_options\":{\"include_usage\":true},"
              "\"repetition_penalty\":1.1,\"presence_penalty\":-2,\"frequency_penalty\":2,"
              "\"skip_special_tokens\":false,\"include_stop_str_in_output\":true,"
              "\"user\":\"u\",\"frobnicate\":1,\"temperature2\":null}",
              &r),
        TL_OK);
    assert_int_equal(r.params.max_tokens, 32);
    assert_true(r.max_tokens_set);
    assert_true(r.params.sp.temperature == 0.0f);
    assert_int_equal(r.params.sp.top_k, 0);
    assert_true(r.params.sp.has_seed);
    assert_int_equal((int64_t)r.params.sp.seed, -7);
    assert_int_equal(r.params.n_stop, 2);
    assert_string_equal(r.params.stop[1], "bc");
    assert_int_equal(r.params.n_stop_token_ids, 1);
    assert_int_equal(r.params.stop_token_ids[0], 5);
    assert_true(r.params.ignore_eos);
    assert_int_equal(r.params.min_tokens, 3);
    assert_int_equal(r.params.logprobs, 2);
    assert_true(r.stream && r.include_usage);
    assert_false(r.params.skip_special_tokens);
    assert_true(r.params.include_stop_str_in_output);
    assert_int_equal(r.n_unknown, 2); /* frobnicate, temperature2; "user" is known */
    oai_request_free(&r);

    /* null is absent; a single stop string; chat's logprobs + top_logprobs */
    assert_int_equal(parse(OAI_CHAT,
                           "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stop\":\"x\","
                           "\"max_tokens\":null,\"logprobs\":true,\"top_logprobs\":3,"
                           "\"max_completion_tokens\":7}",
                           &r),
                     TL_OK);
    assert_int_equal(r.params.n_stop, 1);
    assert_int_equal(r.params.logprobs, 3);
    assert_int_equal(r.params.max_tokens, 7);
    assert_true(r.max_tokens_set);
    assert_false(r.add_special_tokens);
    assert_true(r.chat_opts.add_generation_prompt);
    oai_request_free(&r);
}

static void test_chat_messages(void **state) {
    (void)state;
    struct oai_request r;
    assert_int_equal(
        parse(OAI_CHAT,
              "{\"messages\":[{\"role\":\"system\",\"content\":\"s\"},"
              "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
              "{\"type\":\"text\",\"text\":\"b\"}]},{\"role\":\"assistant\",\"content\":null,"
              "\"reasoning_content\":\"r\"}],\"chat_template_kwargs\":{\"enable_thinking\":false},"
              "\"continue_final_message\":true,\"add_generation_prompt\":false}",
              &r),
        TL_OK);
    assert_int_equal(r.n_messages, 3);
    assert_string_equal(r.messages[1].content, "a\nb"); /* vLLM joins text parts with \n */
    assert_string_equal(r.messages[2].content, "");
    assert_string_equal(r.messages[2].reasoning_content, "r");
    assert_int_equal(r.chat_opts.enable_thinking, 0);
    assert_true(r.continue_final_message);
    oai_request_free(&r);
}

static void test_refusals(void **state) {
    (void)state;
    const enum oai_kind C = OAI_COMPLETION, H = OAI_CHAT;
    expect_refused(C, "{\"prompt\":\"a\"", NULL, "not valid JSON");
    expect_refused(C, "[1,2]", NULL, "must be a JSON object");
    expect_refused(C, "{\"prompt\":\"\\ud800\"}", NULL, "not valid JSON");
    expect_refused(C, "{\"prompt\":\"a\",\"max_tokens\":99999999999999999999999}", NULL,
                   "not valid JSON");
    expect_refused(C, "{}", "prompt", "prompt is required");
    expect_refused(C, "{\"prompt\":\"\"}", "prompt", "must not be empty");
    expect_refused(C, "{\"prompt\":[]}", "prompt", "an empty array");
    expect_refused(C, "{\"prompt\":12.5}", "prompt", "got a number");
    expect_refused(C, "{\"prompt\":[\"a\",[1]]}", "prompt[1]", "all prompts of a batch");
    expect_refused(C, "{\"prompt\":[1,1000]}", "prompt", "[0, 1000)");
    expect_refused(C, "{\"prompt\":[1,-1]}", "prompt", "[0, 1000)");
    expect_refused(C, "{\"prompt\":\"a\",\"max_tokens\":0}", "max_tokens",
                   "max_tokens must be at least 1, got 0.");
    expect_refused(C, "{\"prompt\":\"a\",\"max_tokens\":-5}", "max_tokens", "at least 1");
    expect_refused(C, "{\"prompt\":\"a\",\"max_tokens\":\"ten\"}", "max_tokens", "got a string");
    expect_refused(C, "{\"prompt\":\"a\",\"max_tokens\":2.5}", "max_tokens", "integer");
    expect_refused(C, "{\"prompt\":\"a\",\"max_tokens\":1e300}", "max_tokens", "integer");
    expect_refused(C, "{\"prompt\":\"a\",\"temperature\":-1}", "temperature", "non-negative");
    expect_refused(C, "{\"prompt\":\"a\",\"temperature\":\"hot\"}", "temperature", "a number");
    expect_refused(C, "{\"prompt\":\"a\",\"top_p\":0}", "top_p", "(0, 1]");
    expect_refused(C, "{\"prompt\":\"a\",\"top_p\":1.01}", "top_p", "(0, 1]");
    expect_refused(C, "{\"prompt\":\"a\",\"top_k\":-2}", "top_k", "top_k");
    expect_refused(C, "{\"prompt\":\"a\",\"min_p\":2}", "min_p", "[0, 1]");
    expect_refused(C, "{\"prompt\":\"a\",\"presence_penalty\":3}", "presence_penalty", "[-2, 2]");
    expect_refused(C, "{\"prompt\":\"a\",\"repetition_penalty\":0}", "repetition_penalty",
                   "greater than zero");
    expect_refused(C, "{\"prompt\":\"a\",\"n\":0}", "n", "n must be at least 1");
    expect_refused(C, "{\"prompt\":\"a\",\"n\":true}", "n", "got a boolean");
    expect_refused(C, "{\"prompt\":\"a\",\"n\":1000000}", "n", "at most 16");
    expect_refused(C, "{\"prompt\":[\"a\",\"b\",\"c\"],\"n\":6}", "n", "18 choices");
    expect_refused(C, "{\"prompt\":\"a\",\"seed\":1.5}", "seed", "integer");
    expect_refused(C, "{\"prompt\":\"a\",\"stop\":5}", "stop", "string or an array");
    expect_refused(C, "{\"prompt\":\"a\",\"stop\":[\"\"]}", "stop", "empty string");
    expect_refused(C,
                   "{\"prompt\":\"a\",\"stop\":[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\","
                   "\"9\",\"10\",\"11\",\"12\",\"13\",\"14\",\"15\",\"16\",\"17\"]}",
                   "stop", "at most 16");
    expect_refused(C, "{\"prompt\":\"a\",\"stop_token_ids\":[1000]}", "stop_token_ids",
                   "[0, 1000)");
    expect_refused(C, "{\"prompt\":\"a\",\"logprobs\":-1}", "logprobs", "non-negative");
    expect_refused(C, "{\"prompt\":\"a\",\"logprobs\":21}", "logprobs", "max allowed: 20");
    expect_refused(C, "{\"prompt\":\"a\",\"echo\":true,\"logprobs\":1}", "echo", "echo");
    expect_refused(C, "{\"prompt\":\"a\",\"stream_options\":{\"include_usage\":true}}",
                   "stream_options", "only be defined when `stream=True`");
    expect_refused(C, "{\"prompt\":\"a\",\"min_tokens\":9,\"max_tokens\":4}", "min_tokens",
                   "less than or equal to max_tokens=4");
    expect_refused(C, "{\"prompt\":\"a\",\"suffix\":\"x\"}", "suffix", "not currently supported");
    expect_refused(C, "{\"prompt\":\"a\",\"logit_bias\":{\"5\":1}}", "logit_bias", "not supported");
    expect_refused(C, "{\"prompt\":\"a\",\"use_beam_search\":true}", "use_beam_search",
                   "not supported");
    expect_refused(C, "{\"prompt\":\"a\",\"guided_json\":{}}", "guided_decoding", "structured");
    expect_refused(C, "{\"prompt\":\"a\",\"response_format\":{\"type\":\"json_object\"}}",
                   "response_format", "only");
    expect_refused(H, "{\"messages\":[]}", "messages", "non-empty array");
    expect_refused(H, "{\"messages\":\"hi\"}", "messages", "got a string");
    expect_refused(H, "{\"messages\":[{\"content\":\"x\"}]}", "messages[0]", "role");
    expect_refused(H, "{\"messages\":[{\"role\":\"user\",\"content\":5}]}", "messages[0].content",
                   "string or an array");
    expect_refused(H,
                   "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\","
                   "\"image_url\":{\"url\":\"x\"}}]}]}",
                   "messages[0].content", "only {\"type\": \"text\"");
    expect_refused(H,
                   "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":"
                   "\"function\"}]}",
                   "tools", "not supported");
    expect_refused(H, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_logprobs\":2}",
                   "top_logprobs", "`logprobs` must be set to true");
    expect_refused(H,
                   "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                   "\"continue_final_message\":true}",
                   "continue_final_message", "Cannot set both");
    expect_refused(H, "{\"prompt\":\"x\"}", "messages", "messages is required");
}

static void test_fit(void **state) {
    (void)state;
    struct tl_err err;
    int mt = 0;
    assert_int_equal(prompt_fit(512, 500, 100, 0, &mt, &err), TL_ERR_INVALID);
    assert_string_equal(err.msg,
                        "This model's maximum context length is 512 tokens. However, you "
                        "requested 600 tokens (500 in the messages, 100 in the completion). "
                        "Please reduce the length of the messages or completion.");
    assert_int_equal(prompt_fit(512, 512, 0, 0, &mt, &err), TL_ERR_INVALID);
    assert_string_equal(err.msg,
                        "This model's maximum context length is 512 tokens. However, you "
                        "requested 512 tokens in the messages, Please reduce the length of the "
                        "messages.");
    assert_int_equal(prompt_fit(512, 400, 112, 0, &mt, &err), TL_OK);
    assert_int_equal(mt, 112);
    assert_int_equal(prompt_fit(512, 400, 0, 0, &mt, &err), TL_OK);
    assert_int_equal(mt, 112);
    assert_int_equal(prompt_fit(512, 400, 0, 50, &mt, &err), TL_OK);
    assert_int_equal(mt, 50);
    assert_int_equal(prompt_fit(512, 400, 2147483647, 0, &mt, &err), TL_ERR_INVALID);
    assert_non_null(strstr(err.msg, "requested 2147484047 tokens"));

    int32_t ids[5] = {1, 2, 3, 4, 5};
    int n = 5;
    prompt_truncate(ids, &n, 2);
    assert_int_equal(n, 2);
    assert_int_equal(ids[0], 4);
    assert_int_equal(ids[1], 5);
}

/* Splits text at every pair of cut points and checks the result does not depend on them. */
static void split_everywhere(const char *text, const char *want_r, const char *want_c) {
    size_t n = strlen(text);
    for (size_t a = 0; a <= n; a++) {
        for (size_t b = a; b <= n; b++) {
            struct reasoning rp;
            struct buf rb = {0}, cb = {0};
            reasoning_init(&rp);
            assert_int_equal(reasoning_push(&rp, text, a, &rb, &cb), 0);
            assert_int_equal(reasoning_push(&rp, text + a, b - a, &rb, &cb), 0);
            assert_int_equal(reasoning_push(&rp, text + b, n - b, &rb, &cb), 0);
            assert_int_equal(reasoning_flush(&rp, &rb, &cb), 0);
            if (strcmp(rb.data ? rb.data : "", want_r) || strcmp(cb.data ? cb.data : "", want_c))
                fail_msg("'%s' cut at %zu,%zu: reasoning '%s' content '%s'", text, a, b,
                         rb.data ? rb.data : "", cb.data ? cb.data : "");
            buf_free(&rb);
            buf_free(&cb);
        }
    }
}

static void test_reasoning(void **state) {
    (void)state;
    split_everywhere("Let me think.</think>The answer is 4.", "Let me think.", "The answer is 4.");
    split_everywhere("<think>\nhmm</think>\n\nyes", "\nhmm", "\n\nyes");
    split_everywhere("no end marker <th at all </thin", "no end marker <th at all </thin", "");
    split_everywhere("</think>only content", "", "only content");
    split_everywhere("a</think>b</think>c", "a", "b</think>c");
    split_everywhere("x<think>y", "xy", "");
}

static void test_metrics(void **state) {
    (void)state;
    struct engine_metrics m;
    memset(&m, 0, sizeof m);
    m.num_running = 3;
    m.num_waiting = 2;
    m.gpu_cache_usage = 0.25;
    m.prompt_tokens_total = 1234;
    m.generation_tokens_total = 99;
    m.request_success_total[ENGINE_FINISH_STOP] = 7;
    m.request_success_total[ENGINE_FINISH_LENGTH] = 5;
    m.ttft.n_le = 3;
    m.ttft.le[0] = 0.001;
    m.ttft.le[1] = 0.05;
    m.ttft.le[2] = 1;
    m.ttft.counts[0] = 1;
    m.ttft.counts[1] = 4;
    m.ttft.counts[2] = 6;
    m.ttft.counts[3] = 7;
    m.ttft.count = 7;
    m.ttft.sum = 1.5;
    m.kv_blocks_total = 100;
    struct metrics_server s;
    memset(&s, 0, sizeof s);
    s.unknown_fields_total = 3;
    s.responses[200] = 10;
    s.responses[429] = 2;
    struct buf out = {0};
    assert_int_equal(metrics_render(&out, "my \"model\"", &m, &s), 0);
    const char *want[] = {
        "# TYPE vllm:num_requests_running gauge\n",
        "vllm:num_requests_running{model_name=\"my \\\"model\\\"\"} 3\n",
        "vllm:num_requests_waiting{model_name=\"my \\\"model\\\"\"} 2\n",
        "vllm:gpu_cache_usage_perc{model_name=\"my \\\"model\\\"\"} 0.25\n",
        "vllm:kv_cache_usage_perc{model_name=\"my \\\"model\\\"\"} 0.25\n",
        "# TYPE vllm:prompt_tokens_total counter\n",
        "vllm:prompt_tokens_total{model_name=\"my \\\"model\\\"\"} 1234\n",
        "vllm:request_success_total{finished_reason=\"stop\",model_name=\"my \\\"model\\\"\"} 7\n",
        "vllm:request_success_total{finished_reason=\"length\",model_name=\"my \\\"model\\\"\"} "
        "5\n",
        "# TYPE vllm:time_to_first_token_seconds histogram\n",
        "vllm:time_to_first_token_seconds_bucket{le=\"0.001\",model_name=\"my \\\"model\\\"\"} 1\n",
        "vllm:time_to_first_token_seconds_bucket{le=\"0.05\",model_name=\"my \\\"model\\\"\"} 4\n",
        "vllm:time_to_first_token_seconds_bucket{le=\"+Inf\",model_name=\"my \\\"model\\\"\"} 7\n",
        "vllm:time_to_first_token_seconds_count{model_name=\"my \\\"model\\\"\"} 7\n",
        "vllm:time_to_first_token_seconds_sum{model_name=\"my \\\"model\\\"\"} 1.5\n",
        "# TYPE vllm:e2e_request_latency_seconds histogram\n",
        "vllm:num_preemptions_total{",
        "vllm:cpu_cache_usage_perc{",
        "vllm:num_requests_swapped{",
        "vllm:generation_tokens_total{model_name=\"my \\\"model\\\"\"} 99\n",
        "vllm:time_per_output_token_seconds_count{",
        "tierlm:kv_blocks_total{model_name=\"my \\\"model\\\"\"} 100\n",
        "tierlm:request_unknown_fields_total{model_name=\"my \\\"model\\\"\"} 3\n",
        "tierlm:http_responses_total{code=\"429\",model_name=\"my \\\"model\\\"\"} 2\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!strstr(out.data, want[i])) fail_msg("missing: %s", want[i]);
    assert_null(strstr(out.data, "code=\"404\"")); /* statuses never answered are left out */
    /* every line is a comment or "name{labels} value" */
    for (char *line = out.data; *line;) {
        char *nl = strchr(line, '\n');
        assert_non_null(nl);
        if (line[0] != '#') {
            char *sp = memrchr(line, ' ', (size_t)(nl - line));
            assert_true(sp && sp < nl);
            assert_non_null(memchr(line, '}', (size_t)(nl - line)));
        }
        line = nl + 1;
    }
    buf_free(&out);

    char num[32];
    metrics_format_double(num, 0.1);
    assert_string_equal(num, "0.1");
    metrics_format_double(num, 1.0 / 3);
    assert_true(strtod(num, NULL) == 1.0 / 3);
}

static void test_response_json(void **state) {
    (void)state;
    json_t *e = oai_error_json(400, "bad \"thing\"", "max_tokens");
    char *s = json_dumps(e, JSON_COMPACT | JSON_SORT_KEYS);
    assert_string_equal(s, "{\"error\":{\"code\":400,\"message\":\"bad \\\"thing\\\"\",\"param\":"
                           "\"max_tokens\",\"type\":\"BadRequestError\"}}");
    free(s);
    json_decref(e);
    e = oai_error_json(404, "x", NULL);
    assert_true(json_is_null(json_object_get(json_object_get(e, "error"), "param")));
    assert_string_equal(json_string_value(json_object_get(json_object_get(e, "error"), "type")),
                        "NotFoundError");
    json_decref(e);

    struct buf b = {0};
    json_t *choice = oai_completion_choice(0, "a\nb", 3, NULL, NULL, NULL);
    json_t *arr = json_array();
    json_array_append_new(arr, choice);
    json_t *chunk = oai_envelope("cmpl-1", "text_completion", 5, "m", arr);
    assert_int_equal(oai_sse_event(&b, chunk), 0);
    assert_string_equal(b.data, "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\","
                                "\"created\":5,\"model\":\"m\",\"choices\":[{\"index\":0,"
                                "\"text\":\"a\\nb\",\"logprobs\":null,\"finish_reason\":null,"
                                "\"stop_reason\":null}]}\n\n");
    json_decref(chunk);
    buf_free(&b);

    json_t *lp = oai_logprobs_new(0);
    const char *tops[2] = {"x", "x"};
    const float tlp[2] = {-0.5f, -1.0f};
    assert_int_equal(oai_logprobs_add(lp, 0, "x", -INFINITY, 3, tops, tlp, 2), 0);
    s = json_dumps(lp, JSON_COMPACT);
    assert_string_equal(s, "{\"text_offset\":[3],\"token_logprobs\":[-9999.0],\"tokens\":[\"x\"],"
                           "\"top_logprobs\":[{\"x\":-0.5}]}");
    free(s);
    json_decref(lp);
    lp = oai_logprobs_new(1);
    assert_int_equal(oai_logprobs_add(lp, 1, "\xe4\xbd", -1.0f, 0, NULL, NULL, 0), 0);
    s = json_dumps(lp, JSON_COMPACT);
    /* half a character: the text is U+FFFD, the bytes are the token's own */
    assert_string_equal(s, "{\"content\":[{\"token\":\"\xef\xbf\xbd\",\"logprob\":-1.0,"
                           "\"bytes\":[228,189],\"top_logprobs\":[]}]}");
    free(s);
    json_decref(lp);

    char id[64];
    oai_make_id(id, sizeof id, "chatcmpl-");
    assert_int_equal(strlen(id), strlen("chatcmpl-") + 32);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prompt_forms),  cmocka_unit_test(test_fields),
        cmocka_unit_test(test_chat_messages), cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_fit),           cmocka_unit_test(test_reasoning),
        cmocka_unit_test(test_metrics),       cmocka_unit_test(test_response_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL) ? 1 : 0;
}
