// The store conformance suite: written once, instantiated for every CacheStore implementation.
// A store test file provides a factory and calls INSTANTIATE_TEST_SUITE_P(Name, StoreConformance, ...).
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <ostream>
#include <string>

#include "kvdump/cache_store.h"

namespace kvdump::testing {

/// Makes a fresh, empty store with room for at least 64 MiB; called once per test.
struct StoreFactory {
  std::string name;
  std::function<std::shared_ptr<CacheStore>()> make;
};

inline void PrintTo(const StoreFactory& factory, std::ostream* os) { *os << factory.name; }

inline std::string storeFactoryName(const ::testing::TestParamInfo<StoreFactory>& info) { return info.param.name; }

class StoreConformance : public ::testing::TestWithParam<StoreFactory> {
 protected:
  void SetUp() override { store_ = GetParam().make(); }
  std::shared_ptr<CacheStore> store_;
};

}  // namespace kvdump::testing
