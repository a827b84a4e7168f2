/*
 * ptspec kdiff guard: one call into the kernel's code that always comes back. Our own code; it
 * models nothing of the kernel.
 *
 * The kernel's page-table code runs here in the Python process (ctypes). A tree under review may
 * hold a loop that never ends or a bad pointer; Python's own hang guard (a SIGALRM handler) cannot
 * interrupt C code, and a fault would take the process, its report and every other check with it.
 * kdiff_guarded_call runs one function of the library with
 *
 * - a budget of CPU time (ITIMER_PROF: user and system time of this process, so the machine's
 *   load does not count): when it runs out, SIGPROF ends the call;
 * - handlers for the faults a bad pointer or a bad instruction raise (SIGSEGV, SIGBUS, SIGFPE,
 *   SIGILL, SIGTRAP for __builtin_trap, SIGABRT for the compiler's stack protector) on an
 *   alternate stack (so a runaway recursion that overflows the stack is caught too).
 *
 * An ending signal jumps back here (siglongjmp) and the call returns with status[0] = the signal,
 * status[1] = the faulting address (SIGSEGV, SIGBUS). The library's state is then whatever the
 * call left half done; the Python side reports the call as a violation and never calls that table
 * again (a new table resets the library).
 *
 * Cost: a guarded call must stay cheap (the lock-step makes thousands a second), so the handlers
 * are installed once, at the first guarded call of the library, and chain to the handlers they
 * replaced for a signal that comes outside a guarded call (Python's faulthandler, or another
 * library's guard, which may be inside its own guarded call); an alternate signal stack is set up
 * only where the thread has none. A call then costs two setitimer calls and a gettid. The timer's
 * SIGPROF goes to the process: a thread other than the caller's that takes it passes it on to the
 * caller's (tgkill), and a fault in another thread goes to the handlers the guard replaced. The
 * process's ITIMER_PROF belongs to the guard: a profiler that samples by it would be cut short.
 *
 * The function is called with eight u64 words: the kernel's entry points take at most eight
 * integer or pointer arguments, which the arm64 and x86-64 calling conventions pass in the same
 * registers whatever their C type (narrower ones are read from the low bits; surplus ones are
 * ignored). Its result comes back as a u64 whose low bits the Python side reads by the
 * declared type.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/syscall.h>
#endif

typedef uint64_t (*kdiff_fn8)(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t,
			      uint64_t, uint64_t);

static const int guard_sigs[] = { SIGPROF, SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT };
#define GUARD_NSIGS	((int)(sizeof(guard_sigs) / sizeof(guard_sigs[0])))
#define GUARD_STACK	(256 * 1024)

static sigjmp_buf guard_env;
static volatile sig_atomic_t guard_armed;
static volatile sig_atomic_t guard_signal;
static volatile uintptr_t guard_addr;
static volatile long guard_tid;		/* the thread inside the guarded call */
static int guard_installed;
static struct sigaction guard_prev[GUARD_NSIGS];
static char guard_stack[GUARD_STACK] __attribute__((aligned(16)));

/* a signal outside our guarded call: what would have happened without us */
static void guard_chain(int i, int sig, siginfo_t *si, void *uc)
{
	struct sigaction *p = &guard_prev[i];

	if (p->sa_flags & SA_SIGINFO) {
		if (p->sa_sigaction)
			p->sa_sigaction(sig, si, uc);
		return;
	}
	if (p->sa_handler == SIG_IGN)
		return;
	if (p->sa_handler == SIG_DFL) {
		if (sig == SIGPROF)
			return;		/* a late tick of a guard's timer */
		sigaction(sig, p, NULL);	/* the default action, as if we were not here */
		raise(sig);
		return;
	}
	p->sa_handler(sig);
}

static long this_tid(void)
{
#ifdef __linux__
	return syscall(SYS_gettid);
#else
	return 0;
#endif
}

static void guard_handler(int sig, siginfo_t *si, void *uc)
{
	int i;

	if (guard_armed && this_tid() != guard_tid) {
#ifdef __linux__
		if (sig == SIGPROF) {
			/* the timer's signal is the process's: a Python thread (a progress display)
			 * may take it while the guarded call runs on the main thread; pass it on */
			syscall(SYS_tgkill, getpid(), guard_tid, sig);
			return;
		}
#endif
		/* a fault of another thread is not the guarded call's */
		for (i = 0; i < GUARD_NSIGS; i++)
			if (guard_sigs[i] == sig)
				guard_chain(i, sig, si, uc);
		return;
	}
	if (guard_armed) {
		guard_armed = 0;
		guard_signal = sig;
		guard_addr = (sig == SIGSEGV || sig == SIGBUS) ? (uintptr_t)si->si_addr : 0;
		siglongjmp(guard_env, 1);
	}
	for (i = 0; i < GUARD_NSIGS; i++)
		if (guard_sigs[i] == sig)
			guard_chain(i, sig, si, uc);
}

static void guard_install(void)
{
	struct sigaction sa;
	stack_t ss;
	int i;

	if (sigaltstack(NULL, &ss) == 0 && (ss.ss_flags & SS_DISABLE)) {
		memset(&ss, 0, sizeof(ss));
		ss.ss_sp = guard_stack;
		ss.ss_size = sizeof(guard_stack);
		sigaltstack(&ss, NULL);
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = guard_handler;
	/* SA_NODEFER: the signal is not blocked in the handler, so leaving it by siglongjmp needs
	 * no saved signal mask (sigsetjmp(.., 0): no system call per guarded call) */
	sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	for (i = 0; i < GUARD_NSIGS; i++)
		sigaction(guard_sigs[i], &sa, &guard_prev[i]);
	guard_installed = 1;
}

uint64_t kdiff_guarded_call(void *fn, const uint64_t *a, uint64_t budget_usec, uint64_t *status)
{
	static const struct itimerval off;
	struct itimerval it;
	volatile uint64_t ret = 0;

	if (!guard_installed)
		guard_install();
	memset(&it, 0, sizeof(it));
	it.it_value.tv_sec = budget_usec / 1000000u;
	it.it_value.tv_usec = budget_usec % 1000000u;
	if (!it.it_value.tv_sec && !it.it_value.tv_usec)
		it.it_value.tv_usec = 1;
	guard_signal = 0;
	guard_addr = 0;
	guard_tid = this_tid();
	if (sigsetjmp(guard_env, 0) == 0) {
		guard_armed = 1;
		setitimer(ITIMER_PROF, &it, NULL);
		ret = ((kdiff_fn8)fn)(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]);
		setitimer(ITIMER_PROF, &off, NULL);
		guard_armed = 0;
	} else {
		setitimer(ITIMER_PROF, &off, NULL);
	}
	status[0] = (uint64_t)guard_signal;
	status[1] = (uint64_t)guard_addr;
	return ret;
}
