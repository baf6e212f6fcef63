/* A TCP copy for the network benchmark (benches/machines.rs), static so it runs in a
 * busybox machine and on the host alike: one side sends BYTES zeros, the other counts
 * them, so machine-to-machine over a bridge and host-to-host over loopback are measured
 * with the same program.
 *   tcp-copy listen PORT            accept one connection, read to EOF, print the count
 *   tcp-copy send ADDRESS PORT BYTES
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static char buf[1 << 16];

static int fail(const char *what) {
    perror(what);
    return 1;
}

int main(int argc, char **argv) {
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    if (argc == 3 && strcmp(argv[1], "listen") == 0) {
        int one = 1, s = socket(AF_INET, SOCK_STREAM, 0);
        if (s < 0) return fail("socket");
        setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        sa.sin_port = htons(atoi(argv[2]));
        if (bind(s, (struct sockaddr *)&sa, sizeof sa) < 0) return fail("bind");
        if (listen(s, 1) < 0) return fail("listen");
        int c = accept(s, NULL, NULL);
        if (c < 0) return fail("accept");
        long long total = 0;
        ssize_t n;
        while ((n = read(c, buf, sizeof buf)) > 0) total += n;
        if (n < 0) return fail("read");
        printf("%lld\n", total);
        return 0;
    }
    if (argc == 5 && strcmp(argv[1], "send") == 0) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (s < 0) return fail("socket");
        if (inet_pton(AF_INET, argv[2], &sa.sin_addr) != 1) return fail("address");
        sa.sin_port = htons(atoi(argv[3]));
        if (connect(s, (struct sockaddr *)&sa, sizeof sa) < 0) return fail("connect");
        long long left = atoll(argv[4]);
        while (left > 0) {
            ssize_t n = write(s, buf, left < (long long)sizeof buf ? left : sizeof buf);
            if (n < 0) return fail("write");
            left -= n;
        }
        shutdown(s, SHUT_WR);
        /* Done when the listener has read everything and closed. */
        while (read(s, buf, sizeof buf) > 0) {}
        return 0;
    }
    fprintf(stderr, "usage: tcp-copy listen PORT | tcp-copy send ADDRESS PORT BYTES\n");
    return 2;
}
