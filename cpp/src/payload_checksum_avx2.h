// The AVX2 build of the payload checksum; only compiled, and only called, on x86-64.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kvdump {

/// XXH3-64 of `size` bytes using AVX2 instructions; call only where the CPU supports AVX2. Pure.
uint64_t payloadChecksumAvx2(const void* data, size_t size);

}  // namespace kvdump
