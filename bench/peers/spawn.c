/* spawn: the physical limit for "run N x PROG with exactly C in flight".
 *
 *   spawn N C [PROG]      (PROG defaults to /bin/true)
 *
 * posix_spawn()s PROG (argv = {PROG}, inherited environment) until C are running, then
 * reaps any child with waitpid(-1) and immediately spawns the next, until N have exited.
 * Prints one line of JSON on stdout: {"n":N,"concurrency":C,"seconds":S,"failures":F}.
 * Exit status 0 iff every child exited 0. */
#define _GNU_SOURCE
#include <errno.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

extern char **environ;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: spawn N C [PROG]\n");
        return 2;
    }
    long n = atol(argv[1]), c = atol(argv[2]);
    char *prog = argc > 3 ? argv[3] : "/bin/true";
    char *child_argv[] = {prog, NULL};
    if (n < 0 || c < 1) {
        fprintf(stderr, "spawn: need N >= 0 and C >= 1\n");
        return 2;
    }
    long started = 0, finished = 0, failures = 0;
    double t0 = now();
    while (finished < n) {
        while (started < n && started - finished < c) {
            pid_t pid;
            int rc = posix_spawn(&pid, prog, NULL, NULL, child_argv, environ);
            if (rc != 0) {
                fprintf(stderr, "spawn: posix_spawn %s: %s\n", prog, strerror(rc));
                return 1;
            }
            started++;
        }
        int status;
        pid_t pid = waitpid(-1, &status, 0);
        if (pid < 0) {
            if (errno == EINTR) continue;
            perror("spawn: waitpid");
            return 1;
        }
        finished++;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) failures++;
    }
    double secs = now() - t0;
    printf("{\"n\":%ld,\"concurrency\":%ld,\"seconds\":%.6f,\"failures\":%ld}\n", n, c, secs, failures);
    return failures ? 1 : 0;
}
