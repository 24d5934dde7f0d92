// Counts heap allocations made while a CountAllocations object is alive, so a test can assert
// that a hot path allocates nothing. The interposed malloc itself is defined once, in
// tests/no_alloc_test.cpp, for the whole titans_tests binary.
#pragma once

#include <atomic>

namespace titans::testing {

inline std::atomic<bool> counting_allocations{false};
inline std::atomic<long> allocation_count{0};

class CountAllocations {
 public:
  CountAllocations() {
    allocation_count = 0;
    counting_allocations = true;
  }
  ~CountAllocations() { counting_allocations = false; }
  CountAllocations(const CountAllocations&) = delete;
  CountAllocations& operator=(const CountAllocations&) = delete;
  long count() const { return allocation_count.load(); }
};

}  // namespace titans::testing
