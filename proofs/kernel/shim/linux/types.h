/* ptspec kdiff shim: kernel integer types. Our own code. */
#ifndef KDIFF_SHIM_TYPES_H
#define KDIFF_SHIM_TYPES_H
#include <stdint.h>
#include <stddef.h>
#include <stdbool.h>
typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;
typedef int32_t s32;
typedef int64_t s64;
typedef u64 phys_addr_t;
typedef u64 pteval_t;
#endif
