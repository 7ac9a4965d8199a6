/* cmd_tokenize: `tierlm tokenize` prints the ids of texts; `tierlm detokenize` prints the text
 * of id lists. Both use the model directory's tokenizer.json / tokenizer_config.json. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "text.h"
#include "tokenizer.h"

static void help(FILE *f, int detok) {
    if (detok)
        fprintf(
            f,
            "usage: tierlm detokenize --model DIR [--keep-special-tokens] IDS [IDS ...]\n"
            "\n"
            "Prints the text of each comma-separated id list, one per line.\n"
            "  --model DIR              directory with tokenizer.json (--tokenizer is a synonym)\n"
            "  --keep-special-tokens    print special tokens (skip_special_tokens=false)\n"
            "  -h, --help               this help\n");
    else
        fprintf(
            f,
            "usage: tierlm tokenize --model DIR [--no-add-special-tokens] TEXT [TEXT ...]\n"
            "\n"
            "Prints the token ids of each TEXT, comma-separated, one line per text.\n"
            "  --model DIR              directory with tokenizer.json (--tokenizer is a synonym)\n"
            "  --no-add-special-tokens  do not add BOS etc. (add_special_tokens=false)\n"
            "  -h, --help               this help\n");
}

static int run(int argc, char **argv, int detok) {
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},
        {"tokenizer", required_argument, 0, 'm'},
        {"no-add-special-tokens", no_argument, 0, 'n'},
        {"keep-special-tokens", no_argument, 0, 'k'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *dir = NULL;
    int add_special = 1, keep_special = 0, c;
    const char *name = detok ? "detokenize" : "tokenize";
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            dir = optarg;
            break;
        case 'n':
            add_special = 0;
            break;
        case 'k':
            keep_special = 1;
            break;
        case 'h':
            help(stdout, detok);
            return 0;
        default:
            help(stderr, detok);
            return 2;
        }
    }
    if (!dir || optind >= argc) {
        fprintf(stderr, "tierlm %s: --model DIR and at least one %s are required\n", name,
                detok ? "id list" : "text");
        return 2;
    }
    struct tl_err err = {{0}};
    struct text_ctx tx = {.enable_thinking = -1};
    if (text_open(&tx, dir, true, false, &err) != TL_OK) {
        fprintf(stderr, "tierlm %s: %s\n", name, err.msg);
        return 1;
    }
    tx.vocab_size = tokenizer_n_ids(tx.tok);
    int rc = 0;
    for (int i = optind; i < argc && rc == 0; i++) {
        int32_t *ids = NULL;
        int n = 0;
        if (detok) {
            char *text = NULL;
            size_t len = 0;
            if (text_prompt_ids(&tx, TEXT_PROMPT_IDS, argv[i], &ids, &n, &err) != TL_OK) {
                rc = 2;
            } else if (tokenizer_decode(tx.tok, ids, n, !keep_special, &text, &len, &err) !=
                       TL_OK) {
                rc = 1;
            } else {
                fwrite(text, 1, len, stdout);
                putchar('\n');
            }
            free(text);
        } else if (tokenizer_encode(tx.tok, argv[i], strlen(argv[i]), add_special, &ids, &n,
                                    &err) != TL_OK) {
            rc = 1;
        } else {
            for (int j = 0; j < n; j++) printf("%s%d", j ? "," : "", ids[j]);
            putchar('\n');
        }
        free(ids);
    }
    if (rc) fprintf(stderr, "tierlm %s: %s\n", name, err.msg);
    text_close(&tx);
    return rc;
}

int cmd_tokenize(int argc, char **argv) {
    return run(argc, argv, 0);
}

int cmd_detokenize(int argc, char **argv) {
    return run(argc, argv, 1);
}
