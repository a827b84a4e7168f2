"""C-RETURNS: a call into a kernel tree's C code that loops for good or faults comes back as a
verdict (ptspec.proofs.kernel.guard, shim/kdiff_guard.c), not as a hung or killed check.

The guard itself on a small C library of our own (a loop, a NULL pointer, a wild pointer, a
division by zero, a runaway recursion, a trap), and end to end on bugs planted in a scratch copy of
the cached kernel source: check-kernel refutes them with C-RETURNS and a pasteable counterexample.
Skips (with the reason) without a C compiler or the cached source."""

import ctypes
import faulthandler
import signal
import subprocess
import time

import pytest

from ptspec.proofs.kernel import build, check, guard, planted
from ptspec.proofs.kernel import tree as T
from ptspec.proofs.runner import budgets
from ptspec.proofs.stage2.harness import SubjectFault

from kdiff_support import need_kernel, need_tree  # noqa: E402  (tests/ is on sys.path)

SPIN_C = r"""
#include <stdint.h>
volatile uint64_t sink;
uint64_t spin(uint64_t n) { for (;;) sink += n; }
int null_read(uint64_t off) { return *(volatile int *)(uintptr_t)off; }
int wild_read(uint64_t a) { return *(volatile int *)(uintptr_t)(0x100000000000ull + a); }
int divide(int a, int b) { return a / b; }
uint64_t deep(uint64_t n) { volatile char pad[4096]; pad[0] = (char)n; return deep(n + 1) + pad[0]; }
int trap(void) { __builtin_trap(); }
int smash(uint64_t n) { char buf[8]; volatile char *p = buf; for (uint64_t i = 0; i < n; i++) p[i] = 1; return buf[0]; }
int sum8(uint64_t a, uint64_t b, uint32_t c, int8_t d, uint64_t e, uint64_t f, uint64_t g,
         uint64_t h) { return (int)(a + b + c + d + e + f + g + h); }
uint8_t low_byte(uint64_t a) { return (uint8_t)a; }
int negative(void) { return -22; }
uint32_t out_param(uint64_t *p) { *p = 0x1234567890ull; return 7; }
"""


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    cc = build.compiler()
    if cc is None:
        pytest.skip("no C compiler")
    d = tmp_path_factory.mktemp("guard")
    (d / "spin.c").write_text(SPIN_C)
    so = d / "libspin.so"
    r = subprocess.run([cc, "-O1", "-fPIC", "-shared", "-fstack-protector-strong", "-o", str(so), str(d / "spin.c"),
                        str(build.SHIM_DIR / "kdiff_guard.c")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lib = ctypes.CDLL(str(so))
    u64, i32, u32, u8 = ctypes.c_uint64, ctypes.c_int, ctypes.c_uint32, ctypes.c_uint8
    # guarded as the kernel's entry points are (the names are ours: bind guards kvm_pgtable_*)
    names = {"spin": (u64, [u64]), "null_read": (i32, [u64]), "wild_read": (i32, [u64]),
             "divide": (i32, [i32, i32]), "deep": (u64, [u64]), "trap": (i32, []),
             "smash": (i32, [u64]),
             "sum8": (i32, [u64, u64, u32, ctypes.c_int8, u64, u64, u64, u64]),
             "low_byte": (u8, [u64]), "negative": (i32, []),
             "out_param": (u32, [ctypes.POINTER(u64)])}
    for name, (res, args) in names.items():
        setattr(lib, name, guard.GuardedCall(lib, name, res, args))
    return lib


@pytest.fixture
def short_budget(monkeypatch):
    monkeypatch.setattr(guard, "CALL_CPU_SECONDS", 0.3)


def test_a_loop_that_never_ends_comes_back_as_a_fault(lib, short_budget):
    t0 = time.process_time()
    with pytest.raises(SubjectFault, match=r"spin did not return within 0.3 s of CPU time"):
        lib.spin(1)
    assert time.process_time() - t0 < 5


@pytest.mark.parametrize("call, text", [
    (lambda lib: lib.null_read(0x18), r"null_read faulted: SIGSEGV at address 0x18 \(a NULL"),
    (lambda lib: lib.wild_read(8), r"wild_read faulted: SIG(SEGV|BUS) at a host address"),
    (lambda lib: lib.divide(1, 0), r"divide faulted: SIGFPE"),
    (lambda lib: lib.deep(0), r"deep faulted: SIGSEGV"),          # the stack overflowed
    (lambda lib: lib.trap(), r"trap faulted: SIG(ILL|TRAP)"),
    # a stack buffer overrun past the canary: the stack protector aborts
    (lambda lib: lib.smash(16), r"smash faulted: SIGABRT"),
])
def test_faults_come_back_named(lib, call, text):
    with pytest.raises(SubjectFault, match=text):
        call(lib)
    assert lib.negative() == -22            # and the library is called as before afterwards


def test_arguments_and_results_pass_as_ctypes_would(lib):
    assert lib.sum8(1, 2, 3, -4, 5, 6, 7, 8) == 28
    assert lib.sum8(1 << 63, 1 << 63, 0, 0, 0, 0, 0, 1) == 1       # u64 words, wrapped
    assert lib.low_byte(0x1ff) == 0xff and lib.negative() == -22
    v = ctypes.c_uint64(0)
    assert lib.out_param(ctypes.byref(v)) == 7 and v.value == 0x1234567890
    with pytest.raises(TypeError):
        lib.negative(1)
    with pytest.raises(ctypes.ArgumentError):
        lib.low_byte("x")


def test_the_process_keeps_its_own_handlers_and_timer(lib, short_budget):
    """After guarded faults, a signal outside a guarded call does what it did before: Python's
    handlers run, faulthandler stays on, a late tick of the profiling timer is harmless."""
    was_enabled = faulthandler.is_enabled()
    with pytest.raises(SubjectFault):
        lib.spin(1)
    with pytest.raises(SubjectFault):
        lib.null_read(0)
    assert faulthandler.is_enabled() == was_enabled
    assert signal.getitimer(signal.ITIMER_PROF) == (0.0, 0.0)      # disarmed after the call
    got = []
    old = signal.signal(signal.SIGUSR1, lambda *a: got.append(1))
    try:
        signal.raise_signal(signal.SIGUSR1)
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert got == [1]
    signal.raise_signal(signal.SIGPROF)       # a stray tick outside a call: ignored, as before


def test_bind_guards_the_calls_that_run_kernel_code():
    assert guard.runs_kernel_code("kvm_pgtable_stage2_map")
    assert guard.runs_kernel_code("kdiff_ml_split") and guard.runs_kernel_code("kdiff_get_leaf")
    assert not guard.runs_kernel_code("kdiff_arena") and not guard.runs_kernel_code("kdiff_reset")
    t, _ = T.default_tree()
    if t is None:
        pytest.skip("no cached kernel source")
    need_kernel(12)
    from ptspec.proofs.kernel import cside
    lib = cside.load(12, src=t)
    assert isinstance(lib.kvm_pgtable_stage2_map, guard.GuardedCall)
    assert not isinstance(lib.kdiff_arena, guard.GuardedCall)


# -- end to end: check-kernel on bugs planted in the cached kernel source ----------------------

def _refuted(tree, geometry="4k-39"):
    r = check.check_geometry(tree, geometry, budgets.budget("quick"), 0)
    assert r.status == "refuted", r.detail
    return r


def test_a_null_pointer_in_the_tree_is_refuted_with_a_counterexample(tmp_path):
    """destroy-null-ops (6.1's destroy): SIGSEGV near NULL, refuted by C-RETURNS, the shortest
    sequence (a map, then destroy) as pasteable code that ends in the failing check."""
    t = need_kernel(12)
    tree = T.default_tree()[0]
    assert t is not None
    bad = planted.scratch_tree("destroy-null-ops", tree, tmp_path / "tree")
    r = _refuted(bad)
    cex = r.counterexample
    assert cex["violations"][0].startswith("C-RETURNS destroy: kvm_pgtable_stage2_destroy "
                                           "faulted: SIGSEGV at address 0x")
    ops = cex["ops"].rstrip().splitlines()
    assert ops[-2].startswith("h.step('destroy')") and "does not return" in ops[-2]
    assert ops[-1].startswith("assert not h.violations")
    env = {}
    with pytest.raises(AssertionError, match="C-RETURNS"):        # runs as pasted, in-process
        exec(cex["ops"], env)


def test_a_walk_that_runs_away_is_refuted_not_a_crash(tmp_path):
    """walk-no-advance: the walker's address never moves, its root index runs off the table into
    memory that is not a table: refuted by C-RETURNS (SIGSEGV), and every engine says so."""
    need_kernel(12)
    bad = planted.scratch_tree("walk-no-advance", T.default_tree()[0], tmp_path / "tree")
    r = _refuted(bad)
    assert r.counterexample["violations"][0].startswith("C-RETURNS ")
    from ptspec.proofs.kernel import engines
    for engine in ("exhaustive", "errorpaths", "refusal"):
        out = engines.run_engine(bad, engine, budgets.budget("quick"), geometry="4k-39")
        assert out.status == "refuted", (engine, out.detail)


def test_an_endless_loop_in_a_real_tree_is_refuted(tmp_path, short_budget):
    """tlbi-range-stuck on a cached 6.6+ tree (skipped without one): the deferred range TLBI of
    an FWB table's unmap never ends; refuted by C-RETURNS in the CPU budget, not hung."""
    real = None
    for prefix in ("7.1", "6.12", "6.6"):
        try:
            real = need_tree(prefix)
            break
        except pytest.skip.Exception:
            continue
    if real is None:
        pytest.skip("no cached 6.6 or later tree")
    bad = planted.scratch_tree("tlbi-range-stuck", real, tmp_path / "tree")
    t0 = time.process_time()
    r = _refuted(bad, "4k-48")
    assert "did not return within 0.3 s of CPU time" in r.counterexample["violations"][0]
    assert time.process_time() - t0 < 120


def test_a_table_outside_the_page_table_memory_faults_by_its_pa(tmp_path):
    """table-pa-high: the map installs a table descriptor whose address is outside the arena and
    walks into it in the same call. The shim maps every PA outside the arena into its PROT_NONE
    trap window (kdiff_rt.c), so the walk faults there (not in the process's own memory), and the
    verdict names the PA."""
    need_kernel(12)
    bad = planted.scratch_tree("table-pa-high", T.default_tree()[0], tmp_path / "tree")
    r = _refuted(bad)
    first = r.counterexample["violations"][0]
    assert first.startswith("C-RETURNS map: kvm_pgtable_stage2_map faulted: SIGSEGV at PA 0x10")
    assert "outside the page-table memory the allocator handed out" in first


def test_cache_maintenance_of_guest_memory_is_logged_by_its_pa():
    """Guest memory (outside the arena) reaches the CMO hooks through the trap window: the log
    still names its PA (the same events as before the window)."""
    need_kernel(12)
    from ptspec.proofs.kernel.cside import CPgtable
    p = CPgtable(12, 39, npages=64)
    assert p.init() == 0
    p.drain()
    p.mc.topup(p.mc.capacity)
    assert p.map(0x40000000, 0x200000, 0x2_4020_0000, 6, p.mc) == 0     # R|W, normal: cleaned
    assert ["dcache", 0x2_4020_0000, 0x200000] in p.drain()
    p.mc.topup(p.mc.capacity)
    assert p.map(0x80000000, 0x3000, 0x3_0000_1000, 7, p.mc) == 0       # R|W|X pages
    ev = p.drain()
    assert [["dcache", 0x3_0000_1000 + k * 0x1000, 0x1000] for k in range(3)] == \
        [e for e in ev if e[0] == "dcache"]
    assert [e for e in ev if e[0] == "icache"] == \
        [["icache", 0x3_0000_1000 + k * 0x1000, 0x1000] for k in range(3)]


def test_the_timer_taken_by_another_thread_still_ends_the_call(lib, short_budget):
    """SIGPROF is sent to the process: with another thread running Python (a progress display),
    the guard still ends the guarded call on the caller's thread (passed on with tgkill), and a
    thread that is not in a guarded call is left alone."""
    import threading
    stop = threading.Event()
    spins = [0]

    def busy():                                  # takes its share of the process's signals
        while not stop.is_set():
            spins[0] += 1
    t = threading.Thread(target=busy, daemon=True)
    t.start()
    try:
        for _ in range(3):
            with pytest.raises(SubjectFault, match="did not return"):
                lib.spin(1)
    finally:
        stop.set()
        t.join()
    assert spins[0] > 0
