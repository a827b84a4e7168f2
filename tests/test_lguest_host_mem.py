"""Host's guest memory (impl/lguest/host.py, kept as the words ever written) against the plain
model it replaced: one bytearray of the whole memory plus the set of words ever written. Random
reads and writes (unaligned, 0-8 bytes, across frame boundaries, past the end, values wider than
the store) on a tree of clones must give the same answers, the same guest_words(), and a clone's
writes must never show in its original."""

import random

import pytest

from ptspec.impl.lguest import Lguest
from ptspec.impl.lguest.host import Host

PAGE = 4096


class FlatMemory:
    """The reference: every byte of guest memory, and the aligned words a store ever covered."""

    def __init__(self, size):
        self.mem, self.written = bytearray(size), set()

    def copy(self):
        new = FlatMemory(0)
        new.mem, new.written = bytearray(self.mem), set(self.written)
        return new

    def ok(self, addr, length):
        return addr + length <= min(len(self.mem), 1 << 32)

    def read(self, addr, length):
        return int.from_bytes(self.mem[addr:addr + length], "little") if self.ok(addr, length) else None

    def write(self, addr, length, value):
        if not self.ok(addr, length):
            return False
        self.mem[addr:addr + length] = (value % (1 << (8 * length))).to_bytes(length, "little")
        self.written.update(range(addr - addr % 4, addr + length, 4))
        return True

    def words(self):
        out = {a: int.from_bytes(self.mem[a:a + 4], "little") for a in sorted(self.written)}
        return {a: w for a, w in out.items() if w}


def mismatches(seed, fmt="2level", steps=1500):
    """Differences between Host and FlatMemory over one random run (empty when they agree)."""
    rng = random.Random(seed)
    host = Lguest(fmt, pfn_limit=4).host
    size = host.pfn_limit * PAGE
    pairs = [(host, FlatMemory(size))]
    out = []
    for step in range(steps):
        i = rng.randrange(len(pairs))
        h, ref = pairs[i]
        what = rng.random()
        if what < 0.1:
            pairs.append((h.clone(), ref.copy()))
            continue
        addr = rng.choice([rng.randrange(size + 16), PAGE * rng.randrange(1, 5) - rng.randrange(9),
                           rng.randrange(64)])
        length = rng.randrange(9)
        if what < 0.55:
            value = rng.getrandbits(rng.choice([8, 32, 64, 80]))
            got, want = h.guest_write(addr, length, value), ref.write(addr, length, value)
        else:
            got, want = h.guest_read(addr, length), ref.read(addr, length)
        if got != want:
            out.append(f"step {step}: pair {i} access {addr:#x}+{length}: {got!r} != {want!r}")
    for i, (h, ref) in enumerate(pairs):
        if h.guest_words() != ref.words():
            out.append(f"pair {i}: guest_words differ")
        if set(h.guest_mem) != ref.written:
            out.append(f"pair {i}: words written differ")
    return out


@pytest.mark.parametrize("seed", range(6))
def test_host_memory_matches_the_flat_model(seed):
    assert mismatches(seed, "pae" if seed % 2 else "2level") == []


def test_a_clone_sharing_memory_with_its_original_is_caught(monkeypatch):
    real = Host.clone

    def planted(self):
        new = real(self)
        new.guest_mem = self.guest_mem          # no copy: a clone's stores reach its original
        return new
    monkeypatch.setattr(Host, "clone", planted)
    assert mismatches(0)


def test_a_store_that_drops_a_byte_across_a_word_is_caught(monkeypatch):
    real = Host.guest_write
    monkeypatch.setattr(Host, "guest_write",
                        lambda self, addr, length, value: real(self, addr, min(length, 4 - addr % 4), value)
                        if self.address_ok(addr, length) else False)
    assert mismatches(0)


def test_clone_keeps_the_original_unchanged():
    lg = Lguest("2level")
    lg.host.guest_write(0x1FFE, 4, 0xAABB_CCDD)          # across a frame boundary
    twin = lg.host.clone()
    twin.guest_write(0x1FFC, 8, 0)
    assert lg.host.guest_read(0x1FFE, 4) == 0xAABB_CCDD and twin.guest_read(0x1FFE, 4) == 0
    assert lg.host.guest_words() == {0x1FFC: 0xCCDD_0000, 0x2000: 0xAABB}
    assert twin.guest_words() == {}
