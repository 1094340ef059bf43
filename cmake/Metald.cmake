# Helpers shared by every component's CMakeLists.

# metald_library(<name> SRCS ... DEPS ...): a static library rooted at the repository so that
# includes read "metald/<component>/<file>.h".
function(metald_library name)
  cmake_parse_arguments(A "" "" "SRCS;DEPS" ${ARGN})
  add_library(${name} STATIC ${A_SRCS})
  target_include_directories(${name} PUBLIC ${CMAKE_SOURCE_DIR} ${CMAKE_BINARY_DIR}/gen)
  target_link_libraries(${name} PUBLIC ${A_DEPS})
endfunction()

# metald_tests(DEPS ...): every *_test.cc in the calling folder becomes one gtest executable and
# one ctest, named <folder>_<file>. One broken test file breaks only its own target.
function(metald_tests)
  if(NOT METALD_TESTS)
    return()
  endif()
  cmake_parse_arguments(A "" "LABEL" "DEPS" ${ARGN})
  file(GLOB tests CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/*_test.cc)
  get_filename_component(folder ${CMAKE_CURRENT_SOURCE_DIR} NAME)
  foreach(t ${tests})
    get_filename_component(stem ${t} NAME_WE)
    set(target ${folder}_${stem})
    add_executable(${target} ${t})
    target_link_libraries(${target} PRIVATE ${A_DEPS} GTest::gtest GTest::gmock GTest::gtest_main)
    add_test(NAME ${target} COMMAND ${target})
    set_tests_properties(${target} PROPERTIES TIMEOUT 300 LABELS "${A_LABEL};unit")
  endforeach()
endfunction()
