// libFuzzer target: arbitrary bytes as the Authorization header value, and as the bearer token.
// Authenticate() sees outside bytes on every request, so it must never crash, hang, leak or read
// out of bounds, whatever the input. Seeds: metald/auth/fuzz_corpus/ (the HS256 seed is signed
// with kFuzzSecret below, so mutations start past the signature check).

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "metald/auth/authenticator.h"
#include "metald/auth/testing/jwt_minter.h"
#include "metald/base/check.h"

namespace {

constexpr std::string_view kFuzzSecret = "metald-fuzz-secret-0123456789abcdef";

const metald::auth::Authenticator& FuzzAuthenticator() {
  static const metald::auth::Authenticator* auth = [] {
    using metald::auth::JwtAlgorithm;
    metald::auth::AuthOptions o;
    o.allow_dev_tokens = true;
    o.keys.push_back({"hs", JwtAlgorithm::kHS256, std::string(kFuzzSecret)});
    o.keys.push_back(
        {"rs", JwtAlgorithm::kRS256, metald::auth::testing_util::GenerateRsaKeyPair().public_pem});
    o.keys.push_back({"es", JwtAlgorithm::kES256,
                      metald::auth::testing_util::GenerateEcP256KeyPair().public_pem});
    o.issuer = "fuzz-issuer";
    o.audience = "metald";
    // Fixed time so that a run is reproducible: 2023-11-14T22:13:20Z.
    o.clock = [] {
      return std::chrono::system_clock::time_point(std::chrono::seconds(1700000000));
    };
    auto created = metald::auth::Authenticator::Create(std::move(o));
    METALD_CHECK(created.ok());
    return std::move(created).value().release();
  }();
  return *auth;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const metald::auth::Authenticator& auth = FuzzAuthenticator();
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  auto as_header = auth.Authenticate(input);
  auto as_token = auth.Authenticate("Bearer " + std::string(input));
  // A success must always name a valid customer.
  for (const auto* r : {&as_header, &as_token}) {
    if (r->ok()) METALD_CHECK(metald::auth::IsValidCustomerId((*r)->customer_id));
    if (!r->ok()) METALD_CHECK(r->status().code() == metald::base::StatusCode::kUnauthenticated);
  }
  return 0;
}
