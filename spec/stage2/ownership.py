"""S2-OWN: what an invalid stage-2 descriptor may hold (0, an owner record, from 7.1 another annotation).

Models: the invalid descriptors pgtable.c writes (5.12-5.15 with the pKVM ownership patch:
kvm_init_invalid_leaf_owner / kvm_pgtable_stage2_set_owner; 7.1: kvm_pgtable_stage2_annotate's typed
annotations), judged over the tables the hardware walks from the roots, like the other
single-state invariants (ptspec.spec.stage2.invariants, whose table and report helpers it shares).
A window of tables (``pages``) may limit the check as there.

Leaves out: who may own a page (pKVM's mem_protect.c), and the meaning of an annotation's bits
(beyond the shape of pKVM's donation records: owner in bits 3:1, a guest's metadata in 59:4).
"""

from ptspec.spec.arch import descriptor as D
from ptspec.spec.arch import geometry as G
from ptspec.spec.stage2.invariants import STAGE2, _tables, _where
from ptspec.spec.statements import statement
from ptspec.spec.violation import Violation


def _own_text(d, owner, field, top, tag):
    """What is wrong with invalid descriptor d (owner: D.owner_of's reading of it)."""
    if owner is not None:
        return f"owner id {owner} in descriptor {d:#x} is above KVM_MAX_OWNER_ID {top}"
    tagmask = D.INVALID_TYPE_MASK if tag else 0
    bits = d & ~(D.field_mask(*field) | tagmask)
    text = f"invalid descriptor {d:#x} sets bits {bits:#x} outside the owner field [{field[0]}:{field[1]}]"
    if tag:
        text += (f", or bits 63:60 {d >> 60:#x} are not the owner type {tag >> 60} with an id "
                 "(or a guest's donation record), nor another type annotate stores")
    return text


def own_violations_plain(state):
    """The plain statement of S2-OWN, one slot at a time: every invalid descriptor of a reached table
    inside the input range is 0 or an owner annotation (D.owner_of) with an id up to max_owner_id,
    or (from 7.1) an annotation of another type (D.is_other_annotation) or a guest's donation
    record (D.is_guest_donation).

    s2_own reports the same list, skipping zero slots through the walk's non-zero index
    (tests/test_spec_plain.py holds them equal).
    """
    if state.kind != STAGE2:
        return []
    out = []
    field, top = state.owner_field, state.max_owner_id
    for pa, (level, base, used, _, _) in state.walk().tables.items():
        g = G.granule_size(level, state.page_shift)
        for i, d in enumerate(state.pages[pa][:used]):
            if d & D.VALID:
                continue
            owner = D.owner_of(d, field, state.owner_tag)
            if (owner is not None and owner <= top or D.is_other_annotation(d, state.owner_tag)
                    or D.is_guest_donation(d, state.owner_tag)):
                continue
            at = f"table {pa:#x} index {i} at level {level} (ipa {base + i * g:#x})"
            text = _own_text(d, owner, field, top, state.owner_tag)
            out.append(Violation("S2-OWN", f"{at}: {text}", _where(pa, i, level, base, g, d)))
    return out


@statement("S2-OWN", constrains=(
    "kvm_init_invalid_leaf_owner", "kvm_pgtable_stage2_set_owner", "stage2_map_walker_try_leaf",
    "kvm_clear_pte", "stage2_put_pte", "stage2_unmap_walker"))
def s2_own(state, pages=None):
    """S2-OWN: an invalid descriptor is 0 or a well-formed owner annotation (7.1: or another annotation).

    Statement: every descriptor with the valid bit clear is either 0 (owned by the host, id 0) or has
    bits set only inside the owner field (bits 63:56 in the seed patch, 9:2 from 5.15) holding an id
    in 1..KVM_MAX_OWNER_ID. From 7.1 (kernel_version; kvm_pgtable_stage2_annotate) the annotation
    also carries KVM_HOST_INVALID_PTE_TYPE_DONATION in bits 63:60 (D.owner_tag) and the owner field
    is pKVM's, bits 3:1; an annotation of another type annotate accepts (not 0, not
    KVM_INVALID_PTE_TYPE_LOCKED: KVM_GUEST_INVALID_PTE_TYPE_POISONED, or a type pgtable.c gives no
    meaning) is well formed with any bits 59:1 (D.is_other_annotation), and an untyped non-zero
    invalid descriptor is not (no 7.1 writer makes one). pKVM's record of a page donated to a
    protected guest is an owner-type annotation with PKVM_ID_GUEST in bits 3:1 and the guest's VM
    handle and gfn in bits 59:4 (mem_protect.c's host_stage2_set_owner_metadata_locked): well
    formed when it names a VM (a non-zero handle: D.is_guest_donation); metadata next to any other
    owner id, or a guest record without a handle, is not (no writer).

    Why: pKVM uses the host stage-2 as its record of page ownership; a stray bit or an impossible id
    makes the record unreadable (or reads as a different owner), and a non-zero descriptor is counted
    in the table's refcount, so garbage also breaks S2-RC accounting.

    Constrains: kvm_init_invalid_leaf_owner, kvm_pgtable_stage2_set_owner (rejects ids above
    KVM_MAX_OWNER_ID), stage2_map_walker_try_leaf, and every writer of invalid descriptors
    (kvm_clear_pte, stage2_put_pte, stage2_unmap_walker).
    """
    if state.kind != STAGE2:
        return []
    out = []
    ps, field, top = state.page_shift, state.owner_field, state.max_owner_id
    walk = state.walk()
    tag, valid = state.owner_tag, D.VALID
    for pa, (level, base, used, _, _) in _tables(walk, pages):
        descs = state.pages[pa]
        g = G.granule_size(level, ps)
        nz = walk.nonzero(pa)
        if len(nz) > 64:            # a full table: its distinct invalid non-zero values, each once
            live = descs[:used]     # (picked from the slots when leaves fill it, else from its values)
            odd = {d for d in (live if descs[nz[0]] & valid else set(live)) if not d & valid}
            odd.discard(0)
            if all((D.owner_of(d, field, tag) or top + 1) <= top or D.is_other_annotation(d, tag)
                   or D.is_guest_donation(d, tag) for d in odd):
                continue            # each passes the loop's test below
        for i in nz:
            if i >= used:
                break
            d = descs[i]
            if d & D.VALID:
                continue
            owner = D.owner_of(d, field, tag)         # d is not 0: an id of 1 or more, or None
            if owner is not None and owner <= top or D.is_other_annotation(d, tag) or D.is_guest_donation(d, tag):
                continue
            at = f"table {pa:#x} index {i} at level {level} (ipa {base + i * g:#x})"
            out.append(Violation("S2-OWN", f"{at}: {_own_text(d, owner, field, top, tag)}",
                                 _where(pa, i, level, base, g, d)))
    return out
