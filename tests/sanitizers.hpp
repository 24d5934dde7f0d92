// Whether this test binary runs under AddressSanitizer, which owns malloc (no glibc arena
// statistics, allocation hooks instead of replaceable operator new) and reserves terabytes of
// shadow address space (no RLIMIT_AS).
#pragma once

#if defined(__SANITIZE_ADDRESS__)
#define TITANS_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TITANS_ASAN 1
#endif
#endif

namespace titans::testing {
#ifdef TITANS_ASAN
constexpr bool kUnderAddressSanitizer = true;
#else
constexpr bool kUnderAddressSanitizer = false;
#endif
}  // namespace titans::testing
