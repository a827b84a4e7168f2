/* ptspec kdiff shim: bit helpers (BIT, GENMASK) for building pgtable.c in userspace. Our own code. */
#ifndef KDIFF_SHIM_BITS_H
#define KDIFF_SHIM_BITS_H
#include <stdint.h>
#define BIT(nr)        (1ULL << (nr))
#define BIT_ULL(nr)    (1ULL << (nr))
#define UL(x)          ((unsigned long)(x))
/* bits h..l set, 64-bit */
#define GENMASK(h, l)  ((~0ULL << (l)) & (~0ULL >> (63 - (h))))
#define GENMASK_ULL(h, l) GENMASK(h, l)
#endif
