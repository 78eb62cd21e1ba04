// XXH3-64 compiled for AVX2, chosen at run time by payloadChecksum when the CPU has it: the same
// hash values (XXH3 does not depend on the vector width), at twice the speed on cached data.
#define XXH_INLINE_ALL
#define XXH_VECTOR XXH_AVX2
#include <xxhash.h>

#include "payload_checksum_avx2.h"

namespace kvdump {

uint64_t payloadChecksumAvx2(const void* data, size_t size) { return XXH3_64bits(data, size); }

}  // namespace kvdump
