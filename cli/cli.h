/* cli: the tierlm command's subcommands. Each takes argc/argv after the subcommand name and
 * returns a process exit code (0 ok, 1 runtime failure, 2 usage error). */
#ifndef TL_CLI_H
#define TL_CLI_H

int cmd_generate(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_detokenize(int argc, char **argv);
int cmd_plan(int argc, char **argv);
int cmd_bench(int argc, char **argv);

#endif
