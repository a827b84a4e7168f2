"""kdiff parts that need neither the kernel package nor a compiler: the cache lookup, the .deb
reader on a synthetic package, the skipped status of the command and of the obligations."""

import io
import lzma
import tarfile

from ptspec.proofs.kernel import differ
from ptspec.proofs.kernel import fetch


def _tar(files: dict, compress=None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    return lzma.compress(raw) if compress == "xz" else raw


def _ar(members: dict) -> bytes:
    out = b"!<arch>\n"
    for name, data in members.items():
        hdr = f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode()
        assert len(hdr) == 60
        out += hdr + data + (b"\n" if len(data) & 1 else b"")
    return out


def _fake_deb(tmp_path, drop=None):
    files = {f"linux-source-6.1/{w}": f"/* {w} */\n".encode() for w in fetch.WANTED}
    files["linux-source-6.1/Makefile"] = b"VERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 99\n"
    files["linux-source-6.1/README"] = b"not wanted\n"
    if drop:
        del files[f"linux-source-6.1/{drop}"]
    inner = _tar(files, "xz")
    data = _tar({"./usr/share/doc/x": b"doc", "./usr/src/linux-source-6.1.tar.xz": inner})
    deb = tmp_path / "linux-source-6.1_6.1.99-1_all.deb"
    deb.write_bytes(_ar({"debian-binary": b"2.0\n", "control.tar.xz": _tar({}, "xz"),
                         "data.tar": data}))
    return deb


def test_locate_reports_missing_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PTSPEC_CACHE", str(tmp_path))
    src, why = fetch.locate()
    assert src is None
    assert "diff-kernel --fetch" in why and str(tmp_path) in why


def test_extract_reads_only_wanted_files_and_checks_them(tmp_path, monkeypatch):
    monkeypatch.setenv("PTSPEC_CACHE", str(tmp_path / "cache"))
    deb = _fake_deb(tmp_path)
    src = fetch.extract(deb, fetch.cache_dir() / "source", progress=lambda m: None)
    assert src.version == "6.1.99"
    assert src.pgtable_c.read_text() == "/* arch/arm64/kvm/hyp/pgtable.c */\n"
    assert not (src.root / "README").exists()
    found, why = fetch.locate()
    assert found == src and why == ""
    src.pgtable_c.write_text("changed")          # a changed cached file is not trusted
    found, why = fetch.locate()
    assert found is None and "changed" in why


def test_extract_refuses_incomplete_package(tmp_path):
    deb = _fake_deb(tmp_path, drop="arch/arm64/kvm/hyp/pgtable.c")
    try:
        fetch.extract(deb, tmp_path / "out", progress=lambda m: None)
    except fetch.FetchError as exc:
        assert "pgtable.c" in str(exc)
    else:
        raise AssertionError("an incomplete package was accepted")


def test_command_without_source_is_skipped_not_passed(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PTSPEC_CACHE", str(tmp_path))
    rc = differ.main(["--ops", "10", "--geometry", "4k-39"])
    out = capsys.readouterr().out
    assert rc == 2
    assert "SKIPPED (not a pass)" in out and "--fetch" in out


def test_obligations_without_source_are_unknown(tmp_path, monkeypatch):
    monkeypatch.setenv("PTSPEC_CACHE", str(tmp_path))
    monkeypatch.delenv("PTSPEC_KDIFF_FETCH", raising=False)
    from ptspec.proofs.kernel import checks as checks_kdiff

    class Ctx:
        budget = {"hypothesis_examples": 30, "shrink_replays": 60}
        seed = 0

        def expired(self):
            return False
    for fn in (checks_kdiff.random_ops, checks_kdiff.difference_catalogue):
        r = fn(Ctx())
        assert r.status == "unknown" and "diff-kernel --fetch" in r.detail


def test_cli_rejects_bad_arguments(capsys):
    import pytest
    with pytest.raises(SystemExit) as e:
        differ.main(["--geometry", "4k-99"])
    assert e.value.code == 2
    with pytest.raises(SystemExit):
        differ.main(["--ops", "0"])


def _fake_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PTSPEC_CACHE", str(tmp_path / "cache"))
    fetch.extract(_fake_deb(tmp_path), fetch.cache_dir() / "source", progress=lambda m: None)


def test_no_compiler_is_skipped_not_passed(tmp_path, monkeypatch):
    _fake_cache(tmp_path, monkeypatch)
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    out = differ.run(["4k-39"], 10)
    assert out.status == "skipped" and "no C compiler" in out.reason
    assert "SKIPPED (not a pass)" in differ.format_outcome(out, "6.1")


def test_build_failure_is_skipped_with_the_compiler_output(tmp_path, monkeypatch):
    import pytest
    from ptspec.proofs.kernel import build
    if build.compiler() is None:
        pytest.skip("kdiff: no C compiler to fail with")
    _fake_cache(tmp_path, monkeypatch)
    out = differ.run(["4k-39"], 10)
    assert out.status == "skipped" and "compiling pgtable.c failed" in out.reason


def test_the_build_key_is_hashed_again_only_when_an_input_file_changes(tmp_path, monkeypatch):
    """build._cached_key: the same inputs hash once; a changed pgtable.c (size and time) hashes
    again and names another library."""
    from ptspec.proofs.kernel import build
    _fake_cache(tmp_path, monkeypatch)
    src, _ = fetch.locate()
    hashed = []
    real = build._key
    monkeypatch.setattr(build, "_key", lambda *a: hashed.append(a) or real(*a))
    first = build._cached_key(src, "cc", 12)
    assert build._cached_key(src, "cc", 12) == first and len(hashed) == 1
    assert build._cached_key(src, "cc", 14) != first and len(hashed) == 2
    src.pgtable_c.write_bytes(src.pgtable_c.read_bytes() + b"\n/* changed */\n")
    assert build._cached_key(src, "cc", 12) != first and len(hashed) == 3


def test_profiles_are_impl_kernel_versions():
    from ptspec.proofs.kernel import kernels
    pgt, mc = kernels.make_impl("6.1", 12, 39, npages=64)
    assert pgt.owner_field == (9, 2) and pgt.eagain_continues is False and pgt.table_tlbi_level0
    assert pgt.init() == 0 and mc.topup(4) == 0
    assert pgt.map(0, 0x1000, 1 << 39, 6, mc) == 0
    pgt.log.clear()
    assert pgt.unmap(0, 0x200000) == 0
    tlbis = [e for e in pgt.log if e[0] == "tlbi_ipa"]
    # the page at its level, then the emptied level-3 and level-2 tables with hint 0 (6.1)
    assert tlbis == [("tlbi_ipa", 0, 3), ("tlbi_ipa", 0, 0), ("tlbi_ipa", 0, 0)]
    old, mc = kernels.make_impl("5.15", 12, 39, npages=64)
    assert old.init() == 0 and mc.topup(4) == 0 and old.map(0, 0x1000, 1 << 39, 6, mc) == 0
    old.log.clear()
    assert old.unmap(0, 0x200000) == 0
    assert [e for e in old.log if e[0] == "tlbi_ipa"] == [("tlbi_ipa", 0, 3), ("tlbi_ipa", 0, 2),
                                                          ("tlbi_ipa", 0, 1)]
    import pytest
    with pytest.raises(ValueError):
        kernels.make_impl("4.19", 12, 39, npages=64)
