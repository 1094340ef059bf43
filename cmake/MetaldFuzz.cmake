# libFuzzer targets (clang only). Configure a separate build with
#   CC=clang-14 CXX=clang++-14 cmake -DMETALD_FUZZ=ON -DMETALD_TESTS=OFF -DMETALD_BENCH=OFF
# Every library is then compiled with coverage and ASan/UBSan; each fuzzer links libFuzzer's main.
if(METALD_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "METALD_FUZZ needs clang (CXX=clang++-14)")
  endif()
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()

# metald_fuzzer(<name> SRCS ... DEPS ... CORPUS <dir>): builds fuzz_<name> when METALD_FUZZ is on,
# and records its seed corpus for tools/run-fuzzers.sh.
function(metald_fuzzer name)
  if(NOT METALD_FUZZ)
    return()
  endif()
  cmake_parse_arguments(A "" "CORPUS" "SRCS;DEPS" ${ARGN})
  add_executable(fuzz_${name} ${A_SRCS})
  target_link_libraries(fuzz_${name} PRIVATE ${A_DEPS})
  target_link_options(fuzz_${name} PRIVATE -fsanitize=fuzzer)
  file(APPEND ${CMAKE_BINARY_DIR}/fuzzers.txt "fuzz_${name} ${A_CORPUS}\n")
endfunction()
