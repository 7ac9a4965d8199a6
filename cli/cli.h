/* cli: the tierlm command's subcommands. Each takes argc/argv after the subcommand name and
 * returns a process exit code (0 ok, 1 runtime failure, 2 usage error). */
#ifndef TL_CLI_H
#define TL_CLI_H

int cmd_generate(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_detokenize(int argc, char **argv);
int cmd_plan(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_serve(int argc, char **argv);
/* `tierlm bench serve` (cmd_bench_serve.c), dispatched by cmd_bench. */
int cmd_bench_serve(int argc, char **argv);
/* cmd_bench_kv.c: `tierlm bench kv-tiers` */
int bench_kv_tiers(int argc, char **argv);

#endif
