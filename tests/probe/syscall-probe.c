/* A static probe the security tests run inside a machine: `syscall-probe NAME` makes
 * one call of NAME with arguments that do nothing harmful even where the call is allowed
 * (an invalid flag, a missing file, a clock that cannot be set), and prints the errno
 * name it got, or "ok". Machines of the busybox template have no other way to make
 * these calls; the test hosts share this machine's kernel, so a refusal that fails must
 * still change nothing. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long probe(const char *name)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (!strcmp(name, "init_module"))
		return syscall(SYS_init_module, NULL, 0, "");
	if (!strcmp(name, "finit_module"))
		return syscall(SYS_finit_module, -1, "", 0);
	if (!strcmp(name, "delete_module"))
		return syscall(SYS_delete_module, "berth-no-such-module", 04000 /* O_NONBLOCK */);
	if (!strcmp(name, "kexec_load"))
		return syscall(SYS_kexec_load, 0, 0, NULL, 0xdead0000UL /* no such flags */);
	if (!strcmp(name, "kexec_file_load"))
		return syscall(SYS_kexec_file_load, -1, -1, 0, NULL, 0xdead0000UL);
	if (!strcmp(name, "swapon"))
		return syscall(SYS_swapon, "/berth-no-such-swap-file", 0);
	if (!strcmp(name, "swapoff"))
		return syscall(SYS_swapoff, "/berth-no-such-swap-file");
	if (!strcmp(name, "open_by_handle_at"))
		return syscall(SYS_open_by_handle_at, -1, NULL, 0);
	if (!strcmp(name, "clock_settime")) /* the monotonic clock cannot be set */
		return syscall(SYS_clock_settime, CLOCK_MONOTONIC, &now);
	if (!strcmp(name, "settimeofday")) /* both NULL: sets nothing */
		return syscall(SYS_settimeofday, NULL, NULL);
	if (!strcmp(name, "iopl")) /* levels go up to 3 */
		return syscall(SYS_iopl, 4);
	if (!strcmp(name, "ioperm")) /* beyond the 65536 ports */
		return syscall(SYS_ioperm, 0x10000UL, 1UL, 0);
	if (!strcmp(name, "keyctl")) /* no such command */
		return syscall(SYS_keyctl, 0x7fff, 0, 0, 0, 0);
	if (!strcmp(name, "bpf")) /* no such command */
		return syscall(SYS_bpf, -1, NULL, 0);
	if (!strcmp(name, "perf_event_open"))
		return syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0);
	if (!strcmp(name, "acct"))
		return syscall(SYS_acct, "/berth-no-such-accounting-file");
	if (!strcmp(name, "ptrace")) /* no such request */
		return syscall(SYS_ptrace, 0x7fff, 0, NULL, NULL);
	errno = ENOENT;
	fprintf(stderr, "syscall-probe: unknown call %s\n", name);
	return -2;
}

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		errno = 0;
		long r = probe(argv[i]);
		if (r == -2)
			return 2;
		printf("%s: %s\n", argv[i], r < 0 ? strerrorname_np(errno) : "ok");
	}
	return 0;
}
