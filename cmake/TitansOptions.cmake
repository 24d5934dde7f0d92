# TitansOptions.cmake: the project's options and the one function that applies the shared
# compile settings. Every in-tree target (library, tests, benchmarks, examples) calls
# titans_target_defaults(), so all translation units that instantiate Eigen templates see the
# same -march flags and the same EIGEN_* definitions (mixing them across TUs is an ODR hazard).

include(CheckCXXCompilerFlag)

option(TITANS_BUILD_TESTS "Build the GoogleTest suite (tests/)" ${PROJECT_IS_TOP_LEVEL})
option(TITANS_BUILD_BENCHMARKS "Build the Google Benchmark programs (bench/)"
       ${PROJECT_IS_TOP_LEVEL})
option(TITANS_BUILD_EXAMPLES "Build the example programs (examples/)" ${PROJECT_IS_TOP_LEVEL})
option(TITANS_WARNINGS_AS_ERRORS "Treat compiler warnings as errors (CI turns this on)" OFF)
option(TITANS_NATIVE
       "Optimise for the build machine (GCC: -march=native -mtune=generic; Clang: -march=native). \
The binaries may not run on other CPUs."
       ON)
option(TITANS_SANITIZE_ADDRESS "Build with AddressSanitizer (-fsanitize=address)" OFF)
option(TITANS_SANITIZE_UNDEFINED
       "Build with UndefinedBehaviorSanitizer (-fsanitize=undefined, errors are fatal)" OFF)
option(TITANS_SANITIZE_THREAD "Build with ThreadSanitizer (-fsanitize=thread; the tsan preset)" OFF)

# Native code generation. With g++ 12 a bare -march=native also implies the host's tuning
# (-mtune=znver3 on the Zen 4 CI machine), which costs 20-40% in Eigen GEMM; generic tuning
# with the native ISA is measured fastest (GEMM microbenchmarks on the CI machine; README.md,
# build options). clang 14 is fastest with plain -march=native.
set(_titans_native_flags "")
if(TITANS_NATIVE)
  check_cxx_compiler_flag("-march=native" TITANS_COMPILER_HAS_MARCH_NATIVE)
  if(NOT TITANS_COMPILER_HAS_MARCH_NATIVE)
    message(WARNING "TITANS_NATIVE is ON but ${CMAKE_CXX_COMPILER_ID} rejects -march=native; "
                    "building for the compiler's default target")
  elseif(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    set(_titans_native_flags -march=native -mtune=generic)
  else()
    set(_titans_native_flags -march=native)
  endif()
endif()

# GCC 12.0-12.2 headers write `__m512 __Y = __Y;` in _mm512_undefined_*(), which Eigen's AVX-512
# kernels inline everywhere: hundreds of false -Wuninitialized / -Wmaybe-uninitialized per TU
# that name avx512fintrin.h, not our code (fixed in GCC 12.3). Only AVX-512 builds hit it.
set(_titans_gcc_workarounds "")
if(_titans_native_flags AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU"
   AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 12.3)
  set(_titans_gcc_workarounds -Wno-uninitialized -Wno-maybe-uninitialized)
endif()
# GCC 12 also reports a false -Wrestrict inside libstdc++ for `"literal" + std::string` at -O2
# and above (GCC bug 105651, fixed in GCC 13).
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
  list(APPEND _titans_gcc_workarounds -Wno-restrict)
endif()

set(_titans_sanitizers "")
if(TITANS_SANITIZE_ADDRESS)
  list(APPEND _titans_sanitizers address)
endif()
if(TITANS_SANITIZE_UNDEFINED)
  list(APPEND _titans_sanitizers undefined)
endif()
if(TITANS_SANITIZE_THREAD)
  list(APPEND _titans_sanitizers thread)
endif()
# Fuzzing (fuzz/): every target instrumented for libFuzzer's coverage, with ASan and UBSan.
option(TITANS_BUILD_FUZZERS "Build the libFuzzer targets (fuzz/; Clang only)" OFF)
if(TITANS_BUILD_FUZZERS)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "TITANS_BUILD_FUZZERS needs Clang (libFuzzer): configure with "
                        "CMAKE_CXX_COMPILER=clang++, e.g. `cmake --preset fuzz`")
  endif()
  list(APPEND _titans_sanitizers fuzzer-no-link)
endif()
if(_titans_sanitizers AND MSVC)
  message(FATAL_ERROR "TITANS_SANITIZE_* options are supported with GCC and Clang only")
endif()
list(JOIN _titans_sanitizers "," _titans_sanitize_list)

# titans_target_defaults(<target>): warnings, native flags, EIGEN_DONT_PARALLELIZE, sanitizers.
function(titans_target_defaults target)
  # Eigen, GoogleTest and Google Benchmark come in through imported targets or /usr/include,
  # so they are SYSTEM includes and their own warnings do not count.
  if(MSVC)
    target_compile_options(${target} PRIVATE /W4 /permissive-)
    if(TITANS_WARNINGS_AS_ERRORS)
      target_compile_options(${target} PRIVATE /WX)
    endif()
  else()
    target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic ${_titans_gcc_workarounds})
    if(TITANS_WARNINGS_AS_ERRORS)
      target_compile_options(${target} PRIVATE -Werror)
    endif()
  endif()

  target_compile_options(${target} PRIVATE ${_titans_native_flags})

  # The library opens one OpenMP region per step itself; Eigen must not nest its own.
  target_compile_definitions(${target} PRIVATE EIGEN_DONT_PARALLELIZE)

  if(_titans_sanitize_list)
    set(flags -fsanitize=${_titans_sanitize_list} -fno-omit-frame-pointer)
    if(TITANS_SANITIZE_UNDEFINED)
      list(APPEND flags -fno-sanitize-recover=undefined)
    endif()
    target_compile_options(${target} PRIVATE ${flags})
    # A sanitized static library needs the sanitizer runtime wherever it is linked, also in
    # a parent project that uses titans through add_subdirectory().
    get_target_property(type ${target} TYPE)
    if(type MATCHES "LIBRARY")
      target_link_options(${target} PUBLIC ${flags})
    else()
      target_link_options(${target} PRIVATE ${flags})
    endif()
  endif()
endfunction()
