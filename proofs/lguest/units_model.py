"""The lguest model's own rules, for lg.units.model (proofs/lguest/checks_units.py).

Each function checks, in one format, facts that one raw state cannot show, each from the kernel
(Linux 4.7 drivers/lguest) or docs/lguest.md: a fresh guest is the zeroed struct lguest with the
documented defaults and a failed init falls back to slot 0 (``fresh_and_init``); a second
LHCALL_LGUEST_INIT kills (``data_init``, hypercalls.c); the host arena, its failure knobs, the
recorded NULL/wild/past-the-end accesses, get_user_pages_fast's reach, lguest_address_ok and the
guest memory words (``host``); clone() and prandom_u32 (``clone_rng``); constructor and API
argument bounds (``ctor_and_api``). A broken rule raises ``Fail`` with what was expected.
"""

from __future__ import annotations

import errno

from ptspec.impl.lguest import Lguest

from ptspec.proofs.lguest import guest as G


class Fail(Exception):
    pass


def _expect(cond, what):
    if not cond:
        raise Fail(what)


def fresh_and_init(fmt):
    lg = Lguest(fmt)
    raw = lg.raw_state()
    _expect(raw["cpu_pgd"] == 0 and raw["linear_pages"] is False and raw["kernel_address"] == 0
            and raw["stack"] == [0, 0] and raw["dead"] is None and not raw["tables"]
            and not raw["refs"] and not raw["host_errors"] and not raw["guest_mem"],
            f"{fmt}: a fresh guest is not the zeroed struct lguest: {raw}")
    _expect(all(pd == {"pgdir": 0, "gpgdir": 0, "switcher_mapped": False, "last_host_cpu": 0}
                for pd in raw["pgdirs"]) and len(raw["pgdirs"]) == 4,
            f"{fmt}: fresh pgdir slots are not 4 zeroed struct pgdir: {raw['pgdirs']}")
    _expect(raw["pfn_limit"] == 32 and raw["mem_base"] == 0x4000_0000 and raw["host_cpus"] == 2
            and raw["switcher_addr"] == (0xFFE0_0000 if fmt == "pae" else 0xFFC0_0000)
            and raw["switcher_pages"] == [0x800 + i for i in range(5)]
            and raw["guest_frames"] == [0x2000 + g for g in range(32)],
            f"{fmt}: the defaults differ from docs/lguest.md: {raw}")
    lg.host.fail_next_alloc = 1
    _expect(lg.init() == -errno.ENOMEM, f"{fmt}: init with a failing allocation did not return -ENOMEM")
    raw = lg.raw_state()
    _expect(raw["cpu_pgd"] == 0 and raw["linear_pages"] is False and raw["dead"] is None
            and raw["pgdirs"][0]["last_host_cpu"] == -1 and raw["pgdirs"][0]["pgdir"] == 0
            and lg.host.fail_next_alloc == 0,
            f"{fmt}: a failed new_pgdir must fall back to slot cpu_pgd 0 and reset it: {raw}")
    _expect(lg.init() == 0 and lg.cpu.linear_pages, f"{fmt}: init after one failed allocation failed")


def data_init(fmt):
    lg = Lguest(fmt)
    lg.init()
    lg.guest_write(0x100, G.KERNEL_ADDRESS)
    lg.guest_data_init(0x100)
    _expect(lg.dead is None and lg.kernel_address == G.KERNEL_ADDRESS,
            f"{fmt}: the first LHCALL_LGUEST_INIT failed: {lg.dead}")
    lg.guest_data_init(0x100)
    _expect(lg.dead is not None, f"{fmt}: a second LHCALL_LGUEST_INIT did not kill the guest")


def host(fmt):
    lg = Lguest(fmt, arena_pages=3)
    h = lg.host
    eb = 8 if fmt == "pae" else 4
    n_ent = 4096 // eb
    a, b = h.get_zeroed_page(), h.get_zeroed_page()
    _expect((a, b) == (0x100_0000, 0x100_1000), f"{fmt}: arena not lowest first: {a:#x} {b:#x}")
    h.fail_next_alloc = 2
    _expect(h.get_zeroed_page() == 0 and h.get_zeroed_page() == 0 and h.fail_next_alloc == 0,
            f"{fmt}: fail_next_alloc=2 did not fail exactly twice")
    c = h.get_zeroed_page()
    _expect(c == 0x100_2000 and h.get_zeroed_page() == 0, f"{fmt}: a 3-page arena gave {c:#x} then more")
    h.free_page(c)
    h.free_page(a)
    _expect(h.get_zeroed_page() == a and h.get_zeroed_page() == c and not h.errors,
            f"{fmt}: freed pages are not handed out again lowest first")
    h.free_page(0)
    _expect(not h.errors, f"{fmt}: free_page(0) must be a no-op")
    for count, bad in enumerate((b + 1, b + 0x800, 0x5000), 1):
        h.free_page(bad)
        _expect(len(h.errors) == count and h.errors[-1][0] == "free",
                f"{fmt}: free_page({bad:#x}) of no allocated page was not recorded: {h.errors}")
    _expect(b >> 12 in h.tables, f"{fmt}: an unaligned free_page freed the page")
    h.errors.clear()
    for pa, idx, kind in ((0, 0, "null"), (0x5000, 0, "wild"), (b, n_ent, "oob"), (b, -1, "oob")):
        _expect(h.read(pa, idx) == 0 and h.errors and h.errors[-1][0] == kind,
                f"{fmt}: read({pa:#x}, {idx}) did not record {kind!r}: {h.errors}")
        h.errors.clear()
    h.write(b, n_ent - 1, (1 << (8 * eb)) + 5)
    _expect(h.read(b, n_ent - 1) == 5 and not h.errors, f"{fmt}: the last entry of a table is not usable")
    h.write(b, n_ent - 1, 0)
    _expect(n_ent - 1 not in h.tables[b >> 12], f"{fmt}: writing 0 keeps the word")
    # get_user_pages_fast: guest memory and the launcher's 4 extra pages, nothing else
    base = lg.mem_base
    last = base + (lg.pfn_limit + h.LAUNCHER_EXTRA - 1) * 4096
    for va, want in ((base, 0x2000), (base + 0xFFF, 0x2000), (last, 0x2000 + lg.pfn_limit + 3),
                     (last + 4096, -1), (base - 4096, -1), (base + (1 << 32), 0x2000)):
        got = h.get_user_pages_fast(va, 1)
        _expect(got == want, f"{fmt}: get_user_pages_fast({va:#x}) = {got} (want {want})")
    _expect(h.count[0x2000] == 4 and h.count[0x2000 + lg.pfn_limit + 3] == 2,
            f"{fmt}: get_user_pages_fast did not take one reference each")
    h.fail_next_gup = 2
    _expect(h.get_user_pages_fast(base, 1) == -1 and h.get_user_pages_fast(base, 1) == -1
            and h.fail_next_gup == 0 and h.get_user_pages_fast(base, 1) == 0x2000,
            f"{fmt}: fail_next_gup=2 did not fail exactly twice")
    for fn in (h.get_page, h.put_page):
        n_err = len(h.errors)
        fn(0x1234)
        _expect(len(h.errors) == n_err + 1 and h.errors[-1][0] == "wild",
                f"{fmt}: {fn.__name__} of a foreign page not recorded")
    top = lg.pfn_limit * 4096
    for addr, ln, ok in ((top - 4, 4, True), (top - 3, 4, False), (top, 0, True), (0xFFFF_FFFC, 8, False),
                         ((1 << 32) - 4, 4, False)):
        _expect(h.address_ok(addr, ln) is ok, f"{fmt}: lguest_address_ok({addr:#x}, {ln}) != {ok}")
    _expect(h.guest_read(top - 2, 4) is None and h.guest_write(top - 2, 4, 1) is False,
            f"{fmt}: an access past guest memory succeeded")
    _expect(h.guest_write(0x10, 8, (1 << 72) | (0x1234 << 32) | 0xFFFF_FFFF) and
            h.guest_read(0x10, 8) == (0x1234 << 32) | 0xFFFF_FFFF and h.guest_read(0x14, 4) == 0x1234,
            f"{fmt}: an 8-byte guest write is not little endian and truncated")
    h.guest_write(0x50, 8, (1 << 64) - 1)
    h.guest_write(0x51, 2, 0x1234)        # inside one word: the bytes on either side stay
    h.guest_write(0x56, 1, 0)
    _expect(h.guest_read(0x50, 8) == 0xFF00_FFFF_FF12_34FF and h.guest_read(0x51, 2) == 0x1234
            and h.guest_read(0x53, 3) == 0xFF_FFFF and h.guest_read(0x55, 2) == 0xFF,
            f"{fmt}: a store or load inside a word reaches the wrong bytes")
    h.guest_write(0x50, 8, 0)
    h.guest_write(0x22, 2, 0xABCD)
    h.guest_write(0x30, 4, 0)
    h.guest_write(0x41, 4, 0x4433_2211)
    words = h.guest_words()
    _expect(words == {0x10: 0xFFFF_FFFF, 0x14: 0x1234, 0x20: 0xABCD_0000, 0x40: 0x3322_1100, 0x44: 0x44},
            f"{fmt}: guest_words() = { {hex(k): hex(v) for k, v in words.items()} }")


def clone_rng(fmt):
    lg = Lguest(fmt)
    lg.init()
    lg.forced_random = [3]
    twin = lg.clone()
    before = lg.raw_state()
    twin.guest_write(0x40, 0x1234_5678)
    twin.host.errors.append(["null", "x"])
    twin.fault(0x1000, 2)
    twin.forced_random.append(5)
    twin.host.get_zeroed_page()
    _expect(lg.raw_state() == before and lg.forced_random == [3], f"{fmt}: clone() shares state")
    twin2 = lg.clone()
    _expect([lg.prandom_u32() for _ in range(3)] == [twin2.prandom_u32() for _ in range(3)],
            f"{fmt}: a clone does not continue the same random sequence")
    vals = [lg.prandom_u32() for _ in range(64)]
    _expect(all(0 <= v < 1 << 32 for v in vals) and max(vals) >= 1 << 31 and len(set(vals)) > 32,
            f"{fmt}: prandom_u32 is not spread over the u32 range: {vals[:8]}")


def ctor_and_api(fmt, big=True):
    # the largest guest (1 << 16 frames, 256M of guest memory) takes ~0.1 s: not in quick
    ok = [dict(pfn_limit=1), dict(pfn_limit=33), dict(host_cpus=1), dict(host_cpus=8),
          dict(npgdirs=1), dict(npgdirs=8), dict(switcher_addr=(1 << 32) - 5 * 4096),
          dict(mem_base=0xFFFF_F000), dict(arena_pages=1)]
    bad = [dict(pfn_limit=0), dict(pfn_limit=(1 << 16) + 1), dict(host_cpus=0), dict(host_cpus=9),
           dict(npgdirs=0), dict(npgdirs=9), dict(switcher_addr=(1 << 32) - 4 * 4096),
           dict(switcher_addr=1 << 32), dict(switcher_addr=-4096), dict(mem_base=-4096),
           dict(mem_base=1 << 32), dict(switcher_addr="0xffc00000"), dict(arena_pages=0)]
    if big and fmt == "2level":
        ok.append(dict(pfn_limit=1 << 16))
    for kw in ok:
        try:
            Lguest(fmt, **kw)
        except (TypeError, ValueError) as exc:
            raise Fail(f"{fmt}: Lguest(**{kw}) was refused: {exc}")
    for kw in bad:
        try:
            Lguest(fmt, **kw)
        except (TypeError, ValueError):
            continue
        raise Fail(f"{fmt}: Lguest(**{kw}) was accepted")
    lg = Lguest(fmt)
    lg.init()
    wide = (1 << (64 if fmt == "pae" else 32)) - 1
    lg.guest_write(0x40, (1 << (8 * lg.fmt.entry_bytes)) - 1)
    lg.set_pte(0, 0x1000, wide)
    for call in (lambda: lg.guest_write(0x40, 1 << (8 * lg.fmt.entry_bytes)),
                 lambda: lg.guest_data_init(-4), lambda: lg.guest_data_init(1 << 32),
                 lambda: lg.pin(-1), lambda: lg.pin(1 << 32)):
        before = lg.raw_state()
        try:
            call()
        except (TypeError, ValueError):
            _expect(lg.raw_state() == before, f"{fmt}: a refused call changed the state")
            continue
        raise Fail(f"{fmt}: a misuse call was accepted")
