"""lguest unit obligations (ids lg.units.*): directed scenarios and the host model's own rules.

``lg.units.scenarios`` drives short, fixed operation sequences (each from a booted guest, a fresh
one, one in the linear map, a seed-as-written one, one with a tiny host arena or a switcher over
two tables, both formats) through the lock-step harness, so the spec judges
every step: faults on each branch of demand_page (at the switcher, read-only and kernel pages,
clean PTEs, NX, PSE, frames beyond memory or over 4G, read-only and kernel-only upper entries, the
linear map), guest_pa on each branch, the stack (0 to 3 pages, pin), LHCALL_LGUEST_INIT with bad
addresses and kernel addresses, init with failing allocations, runs on each host CPU, wide PTEs.
The random and exhaustive checkers reach these rarely or never at small budgets.

``lg.units.model`` (the rules are in proofs/lguest/units_model.py) checks what the spec cannot see
in one raw state, each against a kernel or docs/lguest.md fact: a fresh guest is the zeroed struct lguest; a failed init leaves slot 0 as
new_pgdir does; a second LHCALL_LGUEST_INIT kills (hypercalls.c); the host arena hands out the
lowest frame first and failure knobs fail exactly as many times as asked; _where records null,
wild and past-the-end accesses; get_user_pages_fast reaches exactly guest memory plus the
launcher's extra pages; lguest_address_ok's bounds; clone() is deep; prandom_u32 is a full u32;
constructor and API argument bounds. Kills of the mutation run (proofs/mutation/mutants.py) are the proof
that these can fail; proofs/mutation/survivors/lguest.toml lists the mutants shown equivalent.
"""

from __future__ import annotations

from ptspec.proofs.lguest import guest as G
from ptspec.proofs.lguest import units_model as M
from ptspec.proofs.lguest.harness import LguestHarness
from ptspec.proofs.engines.minimize import unit_program
from ptspec.proofs.runner.registry import Result, obligation
from ptspec.proofs.stage2 import returns

P, RW, US, A, D, PSE = 1, 2, 4, 0x20, 0x40, 0x80
NX = 1 << 63


def _scenarios(fmt):
    """name -> (start, [ (op, args) | ("knob", name) ]) with start "boot", "fresh" or "linear"."""
    L = G.GuestLayout(fmt)
    pae = L.pae
    sw = 0xFFE0_0000 if pae else 0xFFC0_0000
    k = G.KERNEL_ADDRESS
    fr = L.data_frames
    pte = lambda va, v: [("guest_write", dict(addr=L.pte_addr(0, va), value=v)),
                         ("set_pte", dict(gpgdir=L.pgdirs[0], vaddr=va, gpte=v))]
    silent = lambda va, v: [("guest_write", dict(addr=L.pte_addr(0, va), value=v))]
    fault = lambda va, e: [("fault", dict(vaddr=va, errcode=e))]
    pa = lambda va: [("pa", dict(vaddr=va))]
    user_pde = L.user_pde_addr(0)
    upd = (lambda flags: [("guest_write", dict(addr=user_pde, value=L.user_pte[0] | flags)),
                          ("set_pmd", dict(pmdp=L.user_pmd[0], idx=0))] if pae else
           [("guest_write", dict(addr=user_pde, value=L.user_pte[0] | flags)),
            ("set_pgd", dict(gpgdir=L.pgdirs[0], idx=0))])
    good = lambda f: (fr[f] << 12) | P | RW | US | A | D
    sw_pde = ((L.kernel_pmd + 511 * 8, L.kernel_pte | P | RW | US | A | D) if pae else
              (L.pgdirs[0] + 1023 * 4, L.kernel_pte | P | RW | A | D))
    other = [("knob", "force_other")]
    s = {
        "fault-switcher": ("boot", fault(sw, 2) + fault(sw, 0) + fault(sw - 0x1000, 0)),
        "fault-switcher-guest-mapped": ("boot", [("guest_write", dict(addr=sw_pde[0], value=sw_pde[1]))]
                                        + fault(sw, 0) + fault(sw + 0x1000, 2)),
        "fault-ro-pte": ("boot", pte(0x1000, (fr[5] << 12) | P | US | A | D) + fault(0x1000, 2)
                         + fault(0x1000, 6) + fault(0x1000, 5) + fault(0x1000, 4)),
        "fault-kernel-page": ("boot", fault(k + 0x1000, 4) + fault(k + 0x1000, 1)
                              + fault(k + 0x1000, 0) + fault(0x5000, 0)),
        "fault-clean": ("boot", silent(0x1000, (fr[5] << 12) | P | RW | US) + fault(0x1000, 4)
                        + fault(0x1000, 5) + fault(0x1000, 1) + fault(0x1000, 6) + fault(0x2000, 1)),
        "fault-pse": ("boot", silent(0x1000, (fr[5] << 12) | P | RW | US | PSE) + fault(0x1000, 0)),
        "fault-pse-ro": ("boot", silent(0x1000, (fr[5] << 12) | P | US | PSE) + fault(0x1000, 2)),
        "fault-beyond": ("boot", silent(0x1000, (L.pfn_limit << 12) | P | RW | US) + fault(0x1000, 0)),
        "fault-frame0": ("boot", silent(0x1000, P | RW | US | A) + fault(0x1000, 0)
                         + silent(0x2000, ((L.pfn_limit - 1) << 12) | P | RW | US) + fault(0x2000, 2)),
        "fault-ro-pde": ("boot", upd(P | US | A | D) + fault(0x1000, 2) + fault(0x1000, 1)
                         + fault(0x1000, 4)),
        "fault-kernel-pde": ("boot", upd(P | RW | A | D) + fault(0x1000, 4) + fault(0x1000, 1)
                             + fault(0x1000, 0) + fault(0x1000, 2)),
        "fault-fail-gup": ("boot", [("knob", "fail_next_gup")] + fault(0x1000, 2)),
        "fault-fail-alloc": ("boot", [("knob", "fail_next_alloc")] + fault(0x1000, 0)),
        "pa": ("boot", pa(0x1234) + pa(k + 0x2345) + pa(k)),
        "pa-no-pte": ("boot", pa(0x5000)),
        "pa-no-pgd": ("boot", pa(0x8000_0000)),
        "pa-switcher": ("boot", pa(sw + 0x10)),
        "pa-pmd1": ("boot", pa(0x20_1234)),
        "pa-outside": ("boot", [("set_stack", dict(esp=L.stack_esp, pages=0)),
                                ("new_pagetable", dict(pgtable=L.pfn_limit << 12))] + pa(0x1234)),
        "fault-outside": ("boot", [("set_stack", dict(esp=L.stack_esp, pages=0)),
                                   ("new_pagetable", dict(pgtable=L.pfn_limit << 12))]
                          + fault(0x1234, 0)),
        "stack": ("boot", [("set_stack", dict(esp=L.stack_esp, pages=2)),
                           ("set_stack", dict(esp=L.stack_esp - 0x1000, pages=0)),
                           ("pin", dict(vaddr=k + 0x2000)), ("clear_all", {}),
                           ("set_stack", dict(esp=L.stack_esp, pages=1)), ("clear_all", {}),
                           ("set_stack", dict(esp=k + 0x3001, pages=1))]),
        "stack-3": ("boot", [("set_stack", dict(esp=L.stack_esp, pages=3))]),
        "stack-clean": ("boot", silent(k + 0x4000, (fr[4] << 12) | P | RW | A)
                        + [("set_stack", dict(esp=k + 0x5000, pages=1))]),
        "pin-unmapped": ("boot", fault(0x1000, 0) + [("pin", dict(vaddr=0x5000))]),
        "pin-switcher": ("boot", [("pin", dict(vaddr=sw))]),
        "pin-regs": ("boot", [("run", dict(host_cpu=0)), ("pin", dict(vaddr=sw + 0x1000))]),
        "pin-stale": ("boot", silent(L.stack_esp - 0x1000, (fr[7] << 12) | P | A | D)
                      + [("pin", dict(vaddr=L.stack_esp - 0x1000))]),
        "run": ("boot", [("run", dict(host_cpu=1)), ("run", dict(host_cpu=0)),
                         ("set_pgd", dict(gpgdir=L.pgdirs[0], idx=0)), ("run", dict(host_cpu=1)),
                         ("run", dict(host_cpu=1)), ("clear_all", {}), ("run", dict(host_cpu=1))]),
        "set-pte-user": ("boot", fault(0x1000, 0) + fault(0x2000, 0) + pte(0x1000, good(6))
                         + pte(0x2000, (fr[6] << 12) | P | RW | US)),
        "set-pte-kernel-all": ("boot", fault(k, 0) + other
                               + [("new_pagetable", dict(pgtable=L.pgdirs[1]))] + fault(k, 0)
                               + [("set_pte", dict(gpgdir=L.pgdirs[1], vaddr=k, gpte=good(6)))]),
        "new-pgdir-fail": ("boot", [("knob", "fail_next_alloc"),
                                    ("new_pagetable", dict(pgtable=L.pgdirs[1]))]),
        "clear-all-fail": ("boot", [("knob", "fail_next_alloc"), ("clear_all", {})]),
        "init-fail": ("fresh", [("knob", "fail_next_alloc"), ("init", {})]),
        "init-fail-switcher": ("tiny", [("init", {})]),
        "init-straddle": ("straddle", [("init", {}), ("run", dict(host_cpu=1))]),
        "linear": ("linear", fault(0x1000, 2) + fault(0x3000, 0) + fault(0x2000, 4) + pa(0x1234)
                   + fault(sw, 0)),
        "linear-leave": ("linear", fault(0x1000, 2) + fault(0x3000, 0)
                         + [("new_pagetable", dict(pgtable=L.pgdirs[0]))]),
        "linear-beyond": ("linear", fault(L.pfn_limit << 12, 0)),
        "data-init": ("linear", [("guest_write", dict(addr=0x100, value=k)),
                                 ("guest_write", dict(addr=0x104, value=0xFFFF_FFFF)),
                                 ("guest_write", dict(addr=0x108, value=0x1234_5678)),
                                 ("guest_data_init", dict(lguest_data=0x100))]),
        "data-init-top": ("linear", [("guest_write", dict(addr=0x100, value=sw)),
                                     ("guest_data_init", dict(lguest_data=0x100))]),
        "data-init-below-top": ("linear", [("guest_write", dict(addr=0x100, value=sw - 1)),
                                           ("guest_data_init", dict(lguest_data=0x100))]),
        "data-init-edge": ("linear", [("guest_data_init", dict(lguest_data=(L.pfn_limit << 12) - 8))]),
        "data-init-out": ("linear", [("guest_data_init", dict(lguest_data=(L.pfn_limit << 12) - 4))]),
        "data-init-wrap": ("linear", [("guest_data_init", dict(lguest_data=0xFFFF_FFFE))]),
        "seed-set-pgd": ("seedboot", [("set_pgd", dict(gpgdir=L.pgdirs[0], idx=0)),
                                      ("set_pgd", dict(gpgdir=L.pgdirs[0], idx=1))]),
    }
    if pae:
        pmd1 = [("guest_write", dict(addr=L.user_pmd[0] + 8, value=L.user_pte[0] | P | RW | US | A | D))]
        s["fault-fail-alloc-pmd"] = ("boot", pmd1 + fault(0x1000, 0) + [("knob", "fail_next_alloc")]
                                     + fault(0x20_1000, 0))
        s["fault-absent-upper"] = ("boot", [("guest_write", dict(addr=0, value=L.user_pte[0] | P | RW | US | A | D)),
                                            ("guest_write", dict(addr=8, value=good(5)))]
                                   + fault(0x4000_1000, 0) + fault(0x20_1000, 0))
        s["fault-pmd1"] = ("boot", pmd1 + fault(0x20_1000, 0) + pa(0x20_1234))
        s["fault-nx"] = ("boot", pte(0x1000, good(5) | NX) + fault(k + 0x1000, 0))
        s["fault-bit44"] = ("boot", silent(0x1000, (fr[5] << 12) | (1 << 44) | P | RW | US)
                            + fault(0x1000, 2) + pte(0x2000, (fr[6] << 12) | (1 << 44) | P | RW | A | D))
        s["fault-bit43"] = ("boot", silent(0x1000, (fr[5] << 12) | (1 << 43) | P | RW | US)
                            + fault(0x1000, 2))
        s["pa-high"] = ("boot", [("guest_write", dict(addr=L.pte_addr(0, 0x5000),
                                                       value=(0xFFFF5 << 12) | (1 << 40) | P))] + pa(0x5123))
        s["wide-pte"] = ("boot", [("set_pte", dict(gpgdir=L.pgdirs[0], vaddr=0x1000, gpte=(1 << 64) - 1))])
    else:
        s["fault-absent-upper"] = ("boot", [("guest_write", dict(addr=4, value=good(5)))]
                                   + fault(0x40_1000, 0))
        s["wide-pte"] = ("boot", [("set_pte", dict(gpgdir=L.pgdirs[0], vaddr=0x1000, gpte=0xFFFF_FFFF))])
        s["fault-bigpde"] = ("boot", upd(P | RW | US | A | D | PSE) + fault(0x1000, 0))
    return L, s


def _bases(fmt):
    L = G.GuestLayout(fmt)
    boot = LguestHarness(fmt, coherent=False)
    G.boot(boot, L)
    seedboot = LguestHarness(fmt, variant="seed-as-written")
    G.boot(seedboot, L)
    for b in (boot, seedboot):      # the counterexample prints the boot as one call
        b.booted, b.boot_source = len(b.log), f"boot(h, GuestLayout({fmt!r}))"
    linear = LguestHarness(fmt)
    linear.step("init")
    straddle = 0xFFDF_E000 if fmt == "pae" else 0xFF3F_E000     # switcher pages over two tables
    return {"boot": boot, "fresh": LguestHarness(fmt), "linear": linear, "seedboot": seedboot,
            "tiny": LguestHarness(fmt, arena_pages=2 if fmt == "pae" else 1),
            "straddle": LguestHarness(fmt, switcher_addr=straddle)}


def _from(base):
    h = LguestHarness(**base.ctor)
    h.lg = base.lg.clone()
    h.raw, h.state = base.raw, base.state
    h.lines = list(base.lines)
    h.log, h.calls = list(base.log), list(base.calls)        # so that the program replays it all
    h.booted, h.boot_source = base.booted, base.boot_source
    return h


@obligation("lg.units.scenarios", engine="unit",
            invariants=["LG-SHADOW", "LG-RC", "LG-SWITCHER", "LG-BND", "LG-C-DEMAND", "LG-C-OTHER",
                        "LG-C-STACK", "LG-C-SET-PTE", "LG-C-SET-PGD", "LG-C-INIT", "LG-C-RUN",
                        "LG-C-NEW-PGTABLE", "LG-C-CLEAR-ALL"],
            kernel_functions=["demand_page", "guest_pa", "pin_page", "guest_set_stack",
                              "page_table_guest_data_init", "init_guest_pagetable",
                              "map_switcher_in_guest", "guest_set_pte"])
def scenarios(ctx):
    """Fixed short operation sequences on each branch of demand_page, guest_pa, the stack pinning,
    LHCALL_LGUEST_INIT, init with failing allocations and running on each host CPU (both formats,
    from a booted, a fresh and a linear-map guest), every step judged by the spec: every invariant,
    per-step LG-SHADOW and the step's contract."""
    n = 0
    for fmt in ("2level", "pae"):
        bases = _bases(fmt)
        _, scen = _scenarios(fmt)
        for name, (start, ops) in scen.items():
            h = _from(bases[start])
            for item in ops:
                if h.dead or h.violations:
                    break
                if item[0] == "knob":
                    if item[1] == "force_other":      # new_pgdir picks a slot other than the current
                        h.force_random((h.lg.cpu.cpu_pgd + 1) % len(h.lg.pgdirs))
                    else:
                        getattr(h, item[1])()
                    continue
                ret = h.step(item[0], **item[1])
                n += 1
                if item[0] == "init" and ret:
                    # init failed: the launcher gives up and the guest never runs, so LG-SWITCHER's
                    # "the current slot maps the switcher" does not apply; LG-C-INIT judges the rest
                    h.violations = [v for v in h.violations if v.inv != "LG-SWITCHER"]
            if not h.violations and h.lg.dead is not None:
                h.step("free")
                n += 1
            if h.violations:
                cx = h.counterexample()
                cx["violations"] = [f"scenario {name} ({fmt})"] + cx["violations"]
                return Result.refuted(cx, examples=n, detail=f"scenario {name} ({fmt})")
    return Result.passed(n, f"{n} scenario steps judged by the spec, both formats")


@obligation("lg.units.model", engine="unit",
            invariants=["LG-C-ARGS", "LG-C-INIT", "LG-BND", "LG-C-RETURNS"],
            kernel_functions=["init_guest_pagetable", "page_table_guest_data_init", "new_pgdir",
                              "get_user_pages_fast", "lguest_address_ok"])
def model(ctx):
    """The lguest model's own rules, each from the kernel or docs/lguest.md: a fresh guest is the
    zeroed struct lguest with the documented defaults; a failed init falls back to slot 0 and
    returns -ENOMEM; a second LHCALL_LGUEST_INIT kills; the host arena is lowest-first and its
    failure knobs fail exactly as often as asked; NULL, wild and past-the-end table accesses are
    recorded; get_user_pages_fast reaches guest memory and the launcher's extra pages only;
    lguest_address_ok's bounds; guest memory words; clone() is deep and keeps the random state;
    prandom_u32 covers the u32 range; constructor and API argument bounds."""
    n = 0
    for fmt in ("2level", "pae"):
        for part in (M.fresh_and_init, M.data_init, M.host, M.clone_rng, M.ctor_and_api):
            big = part is M.ctor_and_api and ctx.profile != "quick"
            call = (f"units_model.{part.__name__}({fmt!r}"
                    + (f", big={big})" if part is M.ctor_and_api else ")"))
            try:
                # each group calls impl directly: under one operation's CPU budget (a loop there
                # is LG-C-RETURNS, not an unknown at the check's hang guard)
                _, hang = returns.unit_call("LG-C-RETURNS", call, _model_part, part, fmt, big)
                failure = [hang] if hang else None
            except M.Fail as exc:
                failure = [str(exc)]
            if failure:
                return Result.refuted({"ops": unit_program(
                                           ["from ptspec.proofs.lguest import units_model"],
                                           ["# raises units_model.Fail where the model breaks a rule"],
                                           call),
                                       "violations": failure, "tables": "",
                                       "kernel_function": part.__name__}, examples=n)
            n += 1
    return Result.passed(n, f"{n} groups of model rules hold, both formats")


def _model_part(part, fmt: str, big: bool):
    """One group of lguest model rules (units_model); ctor_and_api takes the size knob."""
    return part(fmt, big=big) if part is M.ctor_and_api else part(fmt)
