# Every third-party dependency comes from a Debian bookworm package (tools/bootstrap.sh).
find_package(Threads REQUIRED)
find_package(PkgConfig REQUIRED)
find_package(ZLIB REQUIRED)
find_package(OpenSSL REQUIRED)
find_package(Protobuf REQUIRED)
find_package(Boost 1.81 EXACT REQUIRED)
pkg_check_modules(NGHTTP2 REQUIRED IMPORTED_TARGET libnghttp2)
find_package(GTest REQUIRED)
find_package(benchmark QUIET)
find_package(nlohmann_json QUIET)
find_package(SQLite3 QUIET)
pkg_check_modules(LIBJWT QUIET IMPORTED_TARGET libjwt)
pkg_check_modules(GRPCPP QUIET IMPORTED_TARGET grpc++)

# protoc's plugin library (libprotoc) has no CMake config on Debian.
find_library(PROTOC_LIBRARY NAMES protoc REQUIRED)
find_program(PROTOC_EXECUTABLE protoc REQUIRED)
find_program(GRPC_CPP_PLUGIN grpc_cpp_plugin)

add_library(metald_boost INTERFACE)
target_include_directories(metald_boost SYSTEM INTERFACE ${Boost_INCLUDE_DIRS})
target_compile_definitions(metald_boost INTERFACE BOOST_ASIO_NO_DEPRECATED BOOST_BEAST_USE_STD_STRING_VIEW)
target_link_libraries(metald_boost INTERFACE Threads::Threads)
