/* stamp: append this process's CLOCK_REALTIME in nanoseconds, as a decimal line, to FILE.
 *
 *   stamp FILE [VAR...]
 *
 * Reading the clock is the very first thing main() does, so the stamp marks the moment the
 * job's own code began to run (after exec and, if dynamically linked, the loader; setup builds
 * it static to keep that small). The line is written with one O_APPEND write(), so concurrent
 * stamps do not interleave. Each VAR adds the value of that environment variable to the line,
 * space-separated ("-" when unset), e.g. `stamp FILE WORKER_RUN_ID WORKER_STEP` in a workflow
 * step (W9). Used by bench/peers/drive (W3) and reusable for worker itself. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (argc < 2) {
        static const char usage[] = "usage: stamp FILE [VAR...]\n";
        write(2, usage, sizeof usage - 1);
        return 2;
    }
    char line[512];
    size_t len = snprintf(line, sizeof line, "%lld", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
    for (int i = 2; i < argc && len < sizeof line - 1; i++) {
        const char *v = getenv(argv[i]);
        len += snprintf(line + len, sizeof line - len, " %s", v && *v ? v : "-");
    }
    if (len > sizeof line - 2) len = sizeof line - 2;
    line[len++] = '\n';
    int fd = open(argv[1], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, line, len) != (ssize_t)len) {
        perror("stamp");
        return 1;
    }
    return close(fd) == 0 ? 0 : 1;
}
