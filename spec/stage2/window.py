"""The window of one step: the table pages whose per-table invariants a step can have changed.

Models: nothing of the kernel; it is how the single-state invariants of a long run cost what each
step changed instead of what the whole tree holds. Every per-table rule of S2-RC, S2-OWN, S2-BA
and S2-TREE (refcount against counted descriptors, invalid descriptors, leaf encodings, slots
beyond the input range, table upper bits) reads only the table page itself (its descriptors, its
refcount), where the walk reached it (level, input address, slots in range) and state-wide
settings (granule, IPA and PA size, owner field, largest owner id). So when the previous state was
judged whole, a table whose page, refcount and place in the walk are all unchanged gives the same
answer again, and ``check_state(post, pages=changed_tables(pre, post))`` equals
``check_state(post)`` (tests/test_window.py holds them equal; the lock-step harness still judges
the whole state every few steps as a cross-check). The rules over the whole tree (roots,
geometry, the walk's problems, S2-LEAK) are never windowed.
"""

from itertools import compress
from operator import attrgetter, is_, is_not

SETTINGS = ("kind", "page_shift", "ia_bits", "start_level", "pa_bits", "owner_field",
            "max_owner_id")


_SETTINGS = attrgetter(*SETTINGS)


def changed_tables_plain(pre, post):
    """The tables of post reached from its roots whose page, refcount or place in the walk differ
    from pre's (tables new in post included), or None (judge every table) when pre is missing or a
    state-wide setting differs. pre and post are States (ptspec.spec.stage2.state). The plain
    statement, table by table; changed_tables is the same set, faster (tests/test_window.py)."""
    if pre is None or any(getattr(pre, k) != getattr(post, k) for k in SETTINGS):
        return None
    was = pre.walk().tables
    pages, refs = pre.pages, pre.refcount
    post_pages, post_refs = post.pages, post.refcount
    return {pa for pa, where in post.walk().tables.items()
            if was.get(pa) != where or pages.get(pa) != post_pages[pa]
            or refs.get(pa) != post_refs[pa]}


def changed_tables(pre, post):
    """changed_tables_plain's set: the places in the walk and the refcounts compared as sets of
    pairs, the pages by identity first (a page load_state shared with pre is the same object),
    at C speed; and set() at once for the walk, pages and refcounts all shared or equal."""
    if pre is None or _SETTINGS(pre) != _SETTINGS(post):
        return None
    was, tables = pre.walk().tables, post.walk().tables
    pages, refs = pre.pages, pre.refcount
    post_pages, post_refs = post.pages, post.refcount
    if (tables is was and refs == post_refs            # the same walk (lent by load_state's prev)
            and all(map(is_, map(pages.get, tables), map(post_pages.__getitem__, tables)))):
        return set()                # and every table the very page pre's was: nothing changed
    moved = {pa for pa, _ in tables.items() - was.items()}          # new, or elsewhere in the walk
    recounted = {pa for pa, _ in post_refs.items() - refs.items()}.intersection(tables)
    other = compress(tables, map(is_not, map(pages.get, tables), map(post_pages.__getitem__, tables)))
    return moved | recounted | {pa for pa in other if pages.get(pa) != post_pages[pa]}
