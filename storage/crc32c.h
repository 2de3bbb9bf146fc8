// CRC-32C (Castagnoli) of a byte range: the SSE4.2 instruction when the CPU has it, a table
// otherwise. Guards log records and checkpoint files against torn and corrupted writes.
#ifndef ENGRAM_STORAGE_CRC32C_H_
#define ENGRAM_STORAGE_CRC32C_H_

#include <cstddef>
#include <cstdint>

namespace engram::storage {

// CRC-32C of data[0, n), continuing from `crc` (0 for a fresh checksum). Thread-safe.
uint32_t Crc32c(const void* data, size_t n, uint32_t crc = 0);

}  // namespace engram::storage

#endif  // ENGRAM_STORAGE_CRC32C_H_
