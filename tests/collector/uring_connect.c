/* One IORING_OP_CONNECT made with the raw io_uring syscalls (no liburing), for
 * tests/collector/test_kernel_truth.py. Compiled with gcc into the test's tmp_path.
 *
 * usage: uring_connect IPV4 PORT
 * prints "pid <pid>" before submitting, then "res <cqe.res>" (0 or -errno) once completed.
 * exit status: 0 done, 2 usage, 3 io_uring unavailable (setup/mmap/enter failed: reason on stderr).
 */
#include <arpa/inet.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s IPV4 PORT\n", argv[0]);
        return 2;
    }
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    int ring = (int)syscall(__NR_io_uring_setup, 4, &p);
    if (ring < 0) {
        perror("io_uring_setup");
        return 3;
    }
    size_t sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    size_t cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    char *sq = mmap(0, sq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring, IORING_OFF_SQ_RING);
    char *cq = mmap(0, cq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring, IORING_OFF_CQ_RING);
    struct io_uring_sqe *sqes = mmap(0, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
                                     MAP_SHARED | MAP_POPULATE, ring, IORING_OFF_SQES);
    if (sq == MAP_FAILED || cq == MAP_FAILED || sqes == MAP_FAILED) {
        perror("mmap io_uring");
        return 3;
    }

    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) {
        perror("socket");
        return 3;
    }
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1) {
        fprintf(stderr, "bad address %s\n", argv[1]);
        return 2;
    }

    unsigned tail = *(unsigned *)(sq + p.sq_off.tail);
    unsigned idx = tail & *(unsigned *)(sq + p.sq_off.ring_mask);
    struct io_uring_sqe *sqe = &sqes[idx];
    memset(sqe, 0, sizeof *sqe);
    sqe->opcode = IORING_OP_CONNECT;
    sqe->fd = s;
    sqe->addr = (unsigned long)&sa;
    sqe->off = sizeof sa; /* addr2: the address length */
    ((unsigned *)(sq + p.sq_off.array))[idx] = idx;
    __atomic_store_n((unsigned *)(sq + p.sq_off.tail), tail + 1, __ATOMIC_RELEASE);

    printf("pid %d\n", (int)getpid());
    fflush(stdout);
    int n = (int)syscall(__NR_io_uring_enter, ring, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0);
    if (n < 0) {
        perror("io_uring_enter");
        return 3;
    }
    unsigned head = __atomic_load_n((unsigned *)(cq + p.cq_off.head), __ATOMIC_ACQUIRE);
    struct io_uring_cqe *cqe =
        &((struct io_uring_cqe *)(cq + p.cq_off.cqes))[head & *(unsigned *)(cq + p.cq_off.ring_mask)];
    printf("res %d\n", cqe->res);
    fflush(stdout);
    close(s);
    return 0;
}
