/* main: dispatches `tierlm <command> [flags]` to the subcommand table. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "tp_launch.h"

#define TIERLM_VERSION "0.1.0"

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} commands[] = {
    {"generate", cmd_generate, "generate text (or token ids) for prompts, chats or token ids"},
    {"tokenize", cmd_tokenize, "print the token ids of texts"},
    {"detokenize", cmd_detokenize, "print the text of token id lists"},
    {"serve", cmd_serve, "serve the model over vLLM's OpenAI-compatible REST API"},
    {"bench", cmd_bench, "benchmarks: throughput, serve (vLLM's benchmark_throughput / _serving)"},
    {"tp-worker", cmd_tp_worker, "(internal) one tensor-parallel rank that rank 0 started"},
    {"plan", cmd_plan, "plan a model's placement on this machine (or a named GPU) before loading"},
};

static void usage(FILE *f) {
    fprintf(f,
            "tierlm %s: LLM inference for GPUs smaller than the model\n\n"
            "usage: tierlm <command> [flags]   (tierlm <command> --help for its flags)\n\n"
            "commands:\n",
            TIERLM_VERSION);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("tierlm %s\n", TIERLM_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "tierlm: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
