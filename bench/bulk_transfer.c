/* Loopback TCP transfer for the netspy-tui traffic benchmark (not product code).
 *
 * usage: bulk_transfer CHUNK MAX_BYTES MAX_SECONDS
 *
 * Listens on 127.0.0.1 (a free port), forks a receiver (comm "nsbench-rx") that reads until EOF in
 * 256 KiB reads; the sender (comm "nsbench-tx") connects and write()s CHUNK-byte buffers until it
 * has sent MAX_BYTES or MAX_SECONDS passed, then shuts down its side and waits for the receiver.
 * Prints "tx PID BYTES CALLS NS CPU_NS" (the sender's bytes, write() calls, the sending time and the CPU
 * the sender used meanwhile, user + system: its cost per call, which other load on the host moves far less
 * than the rate) and
 * "rx PID BYTES CALLS" (what the receiver read, in how many reads that returned data).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long cpu_ns(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000LL + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000LL;
}

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s CHUNK MAX_BYTES MAX_SECONDS\n", argv[0]);
        return 2;
    }
    long chunk = atol(argv[1]);
    long long max_bytes = atoll(argv[2]);
    double max_s = atof(argv[3]);
    if (chunk <= 0 || chunk > (1 << 20) || max_bytes <= 0 || max_s <= 0) return 2;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 1) || getsockname(l, (struct sockaddr *)&a, &alen))
        return perror("listen"), 1;
    int pipefd[2];
    if (pipe(pipefd)) return 1;
    pid_t child = fork();
    if (child == 0) {
        prctl(PR_SET_NAME, "nsbench-rx");
        int c = accept(l, NULL, NULL);
        static char buf[262144];
        long long got = 0, calls = 0;
        for (;;) {
            ssize_t n = read(c, buf, sizeof buf);
            if (n <= 0) break;
            got += n;
            calls++;
        }
        dprintf(pipefd[1], "rx %d %lld %lld\n", (int)getpid(), got, calls);
        _exit(0);
    }
    prctl(PR_SET_NAME, "nsbench-tx");
    close(l);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(s, (struct sockaddr *)&a, sizeof a)) return perror("connect"), 1;
    char *buf = malloc(chunk);
    memset(buf, 'x', chunk);
    long long cpu0 = cpu_ns(), sent = 0, calls = 0, t0 = now_ns(), limit = (long long)(max_s * 1e9), t = t0;
    while (sent < max_bytes && t - t0 < limit) {
        long want = max_bytes - sent < chunk ? (long)(max_bytes - sent) : chunk;
        ssize_t n = write(s, buf, want);
        if (n <= 0) return perror("write"), 1;
        sent += n;
        calls++;
        if ((calls & 63) == 0) t = now_ns();
    }
    long long elapsed = now_ns() - t0, cpu = cpu_ns() - cpu0;
    shutdown(s, SHUT_WR);
    int status;
    waitpid(child, &status, 0);
    close(s);
    char line[128];
    ssize_t n = read(pipefd[0], line, sizeof line - 1);
    if (n <= 0) return 1;
    line[n] = 0;
    printf("tx %d %lld %lld %lld %lld\n%s", (int)getpid(), sent, calls, elapsed, cpu, line);
    return 0;
}
