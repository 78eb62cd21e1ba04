#include "kvdump/stored_key.h"

#include <cctype>

namespace kvdump {
namespace {

bool allDigits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

bool isHash(std::string_view s) {
  if (s.size() != 16) return false;
  for (char c : s) {
    if (!std::isxdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

// "tp<rank>of<size>"
bool isTpComponent(std::string_view s) {
  if (s.substr(0, 2) != "tp") return false;
  const size_t of = s.find("of");
  return of != std::string_view::npos && allDigits(s.substr(2, of - 2)) && allDigits(s.substr(of + 2));
}

// "L<begin>-<end>"
bool isLayerRange(std::string_view s) {
  if (s.empty() || s[0] != 'L') return false;
  const size_t dash = s.find('-');
  return dash != std::string_view::npos && allDigits(s.substr(1, dash - 1)) && allDigits(s.substr(dash + 1));
}

}  // namespace

StoredKeyKind parseStoredKey(std::string_view key) {
  StoredKeyKind opaque{StoredKeyKind::Kind::kOpaque, key};
  std::string_view parts[6];
  size_t count = 0;
  size_t start = 0;
  while (count < 6) {
    const size_t slash = key.find('/', start);
    parts[count++] = key.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (slash == std::string_view::npos) break;
    start = slash + 1;
    if (count == 6) return opaque;  // more components than any kvdump key has
  }
  if (count < 4 || parts[0].empty() || !isTpComponent(parts[1]) || !isHash(parts[2])) return opaque;
  const std::string_view block = key.substr(0, parts[2].data() + parts[2].size() - key.data());
  if (count == 4 && parts[3].size() > 1 && parts[3].size() <= 11 && parts[3][0] == 'L' &&
      allDigits(parts[3].substr(1))) {
    uint64_t layer = 0;
    for (char c : parts[3].substr(1)) layer = layer * 10 + static_cast<uint64_t>(c - '0');
    if (layer <= UINT32_MAX) return {StoredKeyKind::Kind::kBlockLayer, block, static_cast<uint32_t>(layer)};
  }
  if (parts[3] == "commit" && (count == 4 || (count == 5 && isLayerRange(parts[4])))) {
    return {StoredKeyKind::Kind::kCommitRecord, block};
  }
  return opaque;
}

}  // namespace kvdump
