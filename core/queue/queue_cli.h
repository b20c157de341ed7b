/* queue_cli.h - the `kurir queue ...` command (queue_cli.c). */
#ifndef KURIR_QUEUE_CLI_H
#define KURIR_QUEUE_CLI_H

/* argv: the words after "queue". Returns the exit code. */
int queue_cli_main(int argc, char **argv);

#endif
