/* Loopback connect() storm for the netspy-tui capture benchmark (not product code).
 *
 * usage: connect_storm PORT WORKERS COUNT_PER_WORKER MAX_SECONDS [v6]
 *
 * Forks WORKERS processes (comm "nsbench-gen"); each makes COUNT_PER_WORKER blocking TCP
 * connect()s to 127.0.0.1:PORT (or [::1]:PORT), one fresh socket each, and stops early after
 * MAX_SECONDS. PORT should be bound but not listening, so every connect is refused at once by the
 * loopback stack (nothing leaves the host, nothing needs accepting). Prints one line per worker:
 * "pid connects elapsed_ns", then "total connects elapsed_ns" (wall time of the whole storm).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s PORT WORKERS COUNT MAX_SECONDS [v6]\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]), workers = atoi(argv[2]);
    long count = atol(argv[3]);
    double max_s = atof(argv[4]);
    int v6 = argc > 5 && strcmp(argv[5], "v6") == 0;
    if (port <= 0 || port > 65535 || workers <= 0 || workers > 64 || count <= 0 || max_s <= 0) return 2;
    int fds[64][2];
    pid_t pids[64];
    long long start = now_ns();
    for (int w = 0; w < workers; w++) {
        if (pipe(fds[w]) != 0) return 1;
        pid_t pid = fork();
        if (pid < 0) return 1;
        if (pid == 0) {
            prctl(PR_SET_NAME, "nsbench-gen", 0, 0, 0);
            struct sockaddr_in a4;
            struct sockaddr_in6 a6;
            memset(&a4, 0, sizeof a4);
            memset(&a6, 0, sizeof a6);
            a4.sin_family = AF_INET;
            a4.sin_port = htons(port);
            a4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            a6.sin6_family = AF_INET6;
            a6.sin6_port = htons(port);
            a6.sin6_addr = in6addr_loopback;
            long long t0 = now_ns(), deadline = t0 + (long long)(max_s * 1e9);
            long made = 0;
            while (made < count) {
                int s = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
                if (s < 0) break;
                if (v6)
                    connect(s, (struct sockaddr *)&a6, sizeof a6);
                else
                    connect(s, (struct sockaddr *)&a4, sizeof a4);
                close(s);
                made++;
                if ((made & 255) == 0 && now_ns() > deadline) break;
            }
            long long t1 = now_ns();
            dprintf(fds[w][1], "%d %ld %lld\n", (int)getpid(), made, t1 - t0);
            _exit(0);
        }
        pids[w] = pid;
        close(fds[w][1]);
    }
    long total = 0;
    for (int w = 0; w < workers; w++) {
        char buf[128] = {0};
        ssize_t n = read(fds[w][0], buf, sizeof buf - 1);
        waitpid(pids[w], NULL, 0);
        if (n <= 0) return 1;
        fputs(buf, stdout);
        int pid;
        long made;
        long long ns;
        if (sscanf(buf, "%d %ld %lld", &pid, &made, &ns) == 3) total += made;
    }
    printf("total %ld %lld\n", total, now_ns() - start);
    return 0;
}
