/*
 * retinue-init: PID 1 of a container that has system services.
 *
 *   retinue-init [-s SOCKET] [-t MILLISECONDS] -- PROGRAM [ARG...]
 *
 * It decides nothing; the supervisor (Python, on the host) does. It carries out four duties:
 *   1. start PROGRAM as its child, with the environment, cwd, user, stdio and terminal that the
 *      lower runtime gave PID 1, so the program sees what it would see as PID 1 itself;
 *   2. forward every signal it can catch to that child (the engine signals PID 1);
 *   3. reap every zombie of the PID namespace (orphans are re-parented to PID 1);
 *   4. once the child has exited, tell the supervisor on SOCKET, wait until it answers (it stops
 *      the container's services first) or for at most MILLISECONDS, then exit with the child's
 *      status: its exit code, or 128+N when a signal N ended it, as runc reports for PID 1;
 *      unless the answer is "code N": the supervisor ended the program itself (a required
 *      service failed for good, on_failure = "stop-container") and N says so.
 *
 * The socket is connected before the child exists, so no process of the container can have
 * connected in init's place: the supervisor accepts only a peer whose pid is the container's
 * init. Every descriptor init opens is close-on-exec: the child inherits nothing of init.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_WAIT_MS 12000
/* How long a connect may wait for room in the supervisor's backlog (others may be flooding it). */
#define CONNECT_WAIT_MS 2000

static void say(const char *what, int err)
{
	/* stderr is the container's own: one line, prefixed, only when something went wrong. */
	if (err)
		dprintf(2, "retinue-init: %s: %s\n", what, strerror(err));
	else
		dprintf(2, "retinue-init: %s\n", what);
}

/* Signals raised by init's own faults: blocking them would make a fault loop for ever, and
 * forwarding them would blame the child for init's bug. They stay at their defaults. */
static const int synchronous[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP, SIGABRT, SIGSYS};

static void block_set(sigset_t *set)
{
	sigfillset(set);
	for (size_t i = 0; i < sizeof synchronous / sizeof synchronous[0]; i++)
		sigdelset(set, synchronous[i]);
}

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int connect_supervisor(const char *path)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	int fd;

	if (strlen(path) >= sizeof addr.sun_path) {
		/* The path is ours (a fixed mount point); a long one is a packaging error. */
		say("supervisor socket path too long; running without it", 0);
		return -1;
	}
	strcpy(addr.sun_path, path);
	/* Close-on-exec: the child must not inherit the channel (nor could it speak on it: the
	 * supervisor knows the peer by the pid that connected, and each message by the pid that
	 * wrote it, which must be init's). */
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		say("socket", errno);
		return -1;
	}
	/* A blocking connect, bounded: processes of the container (services run before the main)
	 * may keep the supervisor's backlog full; the supervisor empties it at once, and a
	 * blocked connect takes the first free place, where a non-blocking one would give up. */
	{
		struct timeval tv = {.tv_sec = CONNECT_WAIT_MS / 1000,
				     .tv_usec = (CONNECT_WAIT_MS % 1000) * 1000};
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	}
	if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
		/* The supervisor is gone (or the container was created without one listening): the
		 * container still runs, and at the end init exits at once with nobody to wait for. */
		say("cannot reach the supervisor; services will not be stopped before exit", errno);
		close(fd);
		return -1;
	}
	/* From here on non-blocking: a stop must never hang on the supervisor. */
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	return fd;
}

/* The child's side of the fork, up to exec. Never returns. */
static void exec_child(char **argv, const sigset_t *original_mask)
{
	/* Its own process group, like PID 1 of a plain container, so that a terminal's job-control
	 * signals (^C, ^Z) go to the program and not to init. */
	if (setpgid(0, 0) < 0)
		say("setpgid", errno);
	/* With a terminal, the program's group must be the terminal's foreground group, or it would
	 * be stopped by SIGTTIN/SIGTTOU the first time it reads or writes. Every signal is still
	 * blocked here, so the kernel lets a background group take the terminal without SIGTTOU.
	 * ENOTTY (no terminal: pipes, /dev/null) is the common case and needs nothing. */
	if (isatty(0) && tcsetpgrp(0, getpgrp()) < 0)
		say("tcsetpgrp", errno);
	/* The mask init was started with (runc's, normally empty): a blocked mask survives exec and
	 * the program would never see SIGTERM. Dispositions need no reset: init changed none. */
	sigprocmask(SIG_SETMASK, original_mask, NULL);
	execvp(argv[0], argv);
	/* The same codes a shell uses, so an engine's message reads as it would without init. */
	{
		int err = errno;
		dprintf(2, "retinue-init: exec %s: %s\n", argv[0], strerror(err));
		_exit(err == ENOENT ? 127 : 126);
	}
}

static int status_code(int status)
{
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	/* waitpid without WUNTRACED/WCONTINUED reports only exits; be explicit anyway. */
	return 1;
}

/* Reap every child that has exited; returns 1 once `main_pid` has been reaped (status set). */
static int reap(pid_t main_pid, int *main_status)
{
	int found = 0;
	for (;;) {
		int status;
		pid_t pid = waitpid(-1, &status, WNOHANG);
		if (pid > 0) {
			if (pid == main_pid) {
				*main_status = status;
				found = 1;
			}
			/* Any other pid is an orphan re-parented to us (a daemonized grandchild of a
			 * service): reaping it is the whole point; its status means nothing to anyone. */
			continue;
		}
		if (pid < 0 && errno == EINTR)
			continue;
		/* 0: children left, none exited yet. ECHILD: no children at all. Either way, done. */
		return found;
	}
}

/* Once the program has been reaped, only orphans (of stopping services) are left to reap. */
static void reap_orphans(void)
{
	int ignored;
	reap(-1, &ignored);
}

static void forward(int sig, pid_t main_pid)
{
	/* SIGCHLD is init's own business (reaping). Every other signal is meant for the program. */
	if (sig == SIGCHLD)
		return;
	/* ESRCH: the program exited between the signal and now; there is nobody left to tell. */
	if (kill(main_pid, sig) < 0 && errno != ESRCH)
		say("kill", errno);
}

/* Tell the supervisor the program's status and wait for its answer (the services are stopped)
 * while still reaping, for at most wait_ms. Returns the exit code the answer asks for ("code N",
 * 0-255), else -1: the program's own status stands. */
static int hand_over(int sock, int sfd, int main_status, long wait_ms)
{
	char line[32];
	int n = snprintf(line, sizeof line, "exit %d\n", status_code(main_status));
	long long deadline = now_ms() + wait_ms;

	/* A failed write means the supervisor is gone: nothing to wait for. The socket is
	 * non-blocking, but one short line always fits in an empty socket buffer. MSG_NOSIGNAL:
	 * a closed peer must not kill PID 1 with SIGPIPE (blocked anyway, but be explicit). */
	if (send(sock, line, (size_t)n, MSG_NOSIGNAL) != n)
		return -1;
	for (;;) {
		struct pollfd fds[2] = {{.fd = sock, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
		long long left = deadline - now_ms();
		if (left <= 0) {
			/* The supervisor did not answer in time: exiting ends the services anyway (the
			 * kernel kills the PID namespace with its init); a stop must never hang. */
			say("no answer from the supervisor in time; exiting", 0);
			return -1;
		}
		if (poll(fds, 2, (int)left) < 0) {
			if (errno == EINTR)
				continue;
			say("poll", errno);
			return -1;
		}
		if (fds[0].revents) {
			/* The answer, EOF or an error: in every case the supervisor is done with us.
			 * One short line, sent at once: it arrives whole. */
			char answer[32];
			ssize_t got = recv(sock, answer, sizeof answer - 1, MSG_DONTWAIT);
			if (got > 5 && memcmp(answer, "code ", 5) == 0) {
				char *end;
				long code;
				answer[got] = 0;
				code = strtol(answer + 5, &end, 10);
				if (end != answer + 5 && (*end == '\n' || *end == 0) && code >= 0 && code <= 255)
					return (int)code;
			}
			return -1;
		}
		if (fds[1].revents & POLLIN) {
			struct signalfd_siginfo si;
			/* Drain one signal. Orphans of stopping services still need reaping; other
			 * signals have no program left to go to (SIGKILL from the engine needs no
			 * handling: the kernel ends init and the whole namespace). */
			if (read(sfd, &si, sizeof si) == sizeof si && si.ssi_signo == SIGCHLD)
				reap_orphans();
		}
	}
}

static void usage(void)
{
	say("usage: retinue-init [-s SOCKET] [-t MILLISECONDS] -- PROGRAM [ARG...]", 0);
	exit(2);
}

struct options {
	const char *socket_path; /* -s: NULL when init has no supervisor to tell */
	long wait_ms;            /* -t */
	char **program;          /* after "--": PROGRAM [ARG...], NULL-terminated as argv is */
};

/* Hand-parsed: getopt would permute arguments and reads POSIXLY_CORRECT from the environment,
 * and the program's own arguments after "--" must stay untouched. Exits 2 on a bad line. */
static struct options parse_args(int argc, char **argv)
{
	struct options opt = {.socket_path = NULL, .wait_ms = DEFAULT_WAIT_MS, .program = NULL};
	int i;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0) {
			i++;
			break;
		}
		if (strcmp(argv[i], "-s") == 0 && i + 1 < argc) {
			opt.socket_path = argv[++i];
		} else if (strcmp(argv[i], "-t") == 0 && i + 1 < argc) {
			char *end;
			opt.wait_ms = strtol(argv[++i], &end, 10);
			if (*end || opt.wait_ms < 0)
				usage();
		} else {
			usage();
		}
	}
	/* No program after "--": nothing to be init for. */
	if (i >= argc)
		usage();
	opt.program = argv + i;
	return opt;
}

/* Block every signal before anything can arrive, and take them from a signalfd: a blocked
 * signal is queued even for a PID-namespace init (a signal with the default action would be
 * dropped for PID 1), and one poll loop can wait for signals and the supervisor alike.
 * Returns the signalfd, or -1 (said why); `original` gets the mask init was started with. */
static int configure_signals(sigset_t *original)
{
	sigset_t blocked;
	int sfd;

	block_set(&blocked);
	if (sigprocmask(SIG_BLOCK, &blocked, original) < 0) {
		say("sigprocmask", errno);
		return -1;
	}
	sfd = signalfd(-1, &blocked, SFD_CLOEXEC);
	if (sfd < 0)
		say("signalfd", errno);
	return sfd;
}

/* Forward every signal to the program and reap every zombie until the program has exited.
 * Returns its wait status. */
static int wait_for_main(int sfd, pid_t main_pid)
{
	int main_status = 0;

	for (;;) {
		struct signalfd_siginfo si;
		ssize_t got = read(sfd, &si, sizeof si);
		if (got < 0) {
			if (errno == EINTR)
				continue;
			say("read signalfd", errno);
			/* Without signals init can neither reap nor forward; wait for the program
			 * directly so its status is still the container's. */
			while (waitpid(main_pid, &main_status, 0) < 0 && errno == EINTR)
				;
			return main_status;
		}
		/* signalfd hands out whole records only; a short read cannot happen, and if it
		 * ever did there would be no signal number to act on. */
		if (got != sizeof si)
			continue;
		forward((int)si.ssi_signo, main_pid);
		/* SIGCHLD coalesces: one may stand for many exits, so reap all of them each time. */
		if (si.ssi_signo == SIGCHLD && reap(main_pid, &main_status))
			return main_status;
	}
}

int main(int argc, char **argv)
{
	struct options opt = parse_args(argc, argv);
	sigset_t original;
	int sock = -1, sfd, main_status;
	pid_t main_pid;

	/* Not dumpable: a process of the container with init's uid but without CAP_SYS_PTRACE can
	 * then neither ptrace init nor copy its descriptors (pidfd_getfd), the supervisor channel
	 * among them. The child gets a dumpable process back at its exec. */
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		say("prctl(PR_SET_DUMPABLE)", errno);

	sfd = configure_signals(&original);
	if (sfd < 0)
		return 1;

	/* Before the fork: once the program runs, any process of the container could race init to
	 * the socket; before it, init is the only process there is.
	 * No -s: a container without services (a policy's init = true), init is only PID 1. */
	if (opt.socket_path)
		sock = connect_supervisor(opt.socket_path);

	main_pid = fork();
	if (main_pid < 0) {
		/* Out of pids or memory at the container's very start: runc reports the exit. */
		say("fork", errno);
		return 1;
	}
	if (main_pid == 0)
		exec_child(opt.program, &original);

	main_status = wait_for_main(sfd, main_pid);

	/* No channel (none asked for, or the supervisor was gone at start): nobody to wait for. */
	if (sock >= 0) {
		int code = hand_over(sock, sfd, main_status, opt.wait_ms);
		if (code >= 0)
			return code;
	}
	return status_code(main_status);
}
