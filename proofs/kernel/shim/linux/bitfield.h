/* ptspec kdiff shim: FIELD_PREP / FIELD_GET over a constant mask. Our own code. */
#ifndef KDIFF_SHIM_BITFIELD_H
#define KDIFF_SHIM_BITFIELD_H
#include <linux/bits.h>
#define KDIFF_MASK_SHIFT(m)       __builtin_ctzll((unsigned long long)(m))
#define FIELD_PREP(mask, val) \
	((((unsigned long long)(val)) << KDIFF_MASK_SHIFT(mask)) & (unsigned long long)(mask))
#define FIELD_GET(mask, reg) \
	((((unsigned long long)(reg)) & (unsigned long long)(mask)) >> KDIFF_MASK_SHIFT(mask))
#endif
